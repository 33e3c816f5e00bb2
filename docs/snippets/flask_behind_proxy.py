"""Flask behind an nginx that sets X-Real-IP (and nothing else in front of it).

Shown in docs/frameworks.md; run by tests/test_docs.py.
"""

from flask import Flask, request

from realip import RealIPWSGIMiddleware

app = Flask(__name__)
# [middleware]
app.wsgi_app = RealIPWSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,
    trusted_proxies=["10.0.0.5"],  # the nginx
    strategy="x-real-ip",  # nginx: proxy_set_header X-Real-IP $remote_addr;
    on_failure="reject",  # a header from the proxy that is not one address: 400
)
# [/middleware]


@app.get("/")
def whoami() -> dict:
    realip = request.environ["realip"]  # a realip.Resolution
    return {"client": request.remote_addr, "source": realip.source, "error": realip.error}
