"""A Flask app behind realip.

Run it with ``gunicorn --bind [::]:8000 flask_app:app`` (dual-stack); IPv4
clients then arrive as ``::ffff:a.b.c.d`` and realip gives Flask ``a.b.c.d``.
"""

from flask import Flask, request

from realip import RealIPWSGIMiddleware

app = Flask(__name__)
app.wsgi_app = RealIPWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]


@app.get("/")
def whoami() -> dict:
    realip = request.environ["realip"]
    return {
        "client": [request.remote_addr, int(request.environ["REMOTE_PORT"])],
        "peer": list(realip.peer or ()),
        "source": realip.source,
    }
