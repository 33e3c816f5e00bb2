"""Flask behind a proxy that serves it under /api, on the port clients use.

The proxy (tests/proxies/nginx-port-prefix.conf) strips ``/api`` and sends
``X-Forwarded-Prefix: /api`` and ``X-Forwarded-Port: 8443``; ``url_for(...,
_external=True)`` then builds ``http://host:8443/api/items/3``. The proxy's
address comes from ``REALIP_TRUSTED_PROXIES``. Shown in docs/proxies.md; run
behind a real nginx by tests/test_forwarded_port_prefix.py.
"""

from flask import Flask, request, url_for

app = Flask(__name__)


@app.get("/items/<int:id>")
def item(id: int) -> dict:
    return {
        "url": url_for("item", id=id, _external=True),
        "client": request.remote_addr,
        "root_path": request.script_root,
        "forwarded": {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-forwarded-")},
        "error": request.environ["realip"].error,
    }


# [app]
from realip import RealIPWSGIMiddleware  # noqa: E402

app.wsgi_app = RealIPWSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,  # trusted_proxies: REALIP_TRUSTED_PROXIES
    forwarded_port=True,  # X-Forwarded-Port: SERVER_PORT and the HTTP_HOST port
    forwarded_prefix=True,  # X-Forwarded-Prefix: in front of SCRIPT_NAME
)
# [/app]
