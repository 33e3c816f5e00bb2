"""Flask with realip's Prometheus counters at /metrics, for gunicorn with several workers.

Shown in docs/downstream/metrics.md; served by tests/test_metrics.py under
gunicorn --workers 2 with PROMETHEUS_MULTIPROC_DIR and metrics_gunicorn_conf.py.
"""

# [app]
from flask import Flask, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import realip.metrics
from realip import RealIPWSGIMiddleware

realip.metrics.enable()  # in each worker (gunicorn imports the app in each one)

app = Flask(__name__)
app.wsgi_app = RealIPWSGIMiddleware(  # type: ignore[method-assign]
    DispatcherMiddleware(app.wsgi_app, {"/metrics": realip.metrics.wsgi_app()})
)


@app.get("/")
def index() -> dict:
    return {"client": request.remote_addr}


# [/app]
