"""Flask with Flask-Limiter: one bucket per client network, as realip decided the client.

Shown in docs/downstream/ratelimit.md; served behind a real nginx by
tests/test_ratelimit.py (the trusted proxies come from REALIP_TRUSTED_PROXIES).
"""

# [app]
import functools

from flask import Flask, request
from flask_limiter import Limiter

import realip.ratelimit
from realip import RealIPWSGIMiddleware

app = Flask(__name__)
app.wsgi_app = RealIPWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
limiter = Limiter(realip.ratelimit.flask_limiter_key, app=app, storage_uri="memory://")


@app.get("/")
@limiter.limit("2/minute")
def index() -> dict:
    return {"client": request.remote_addr, "key": realip.ratelimit.key(request)}


# Another grouping for one route: whole /56s (what many ISPs delegate to a home).
@app.get("/per-56")
@limiter.limit("2/minute", key_func=functools.partial(realip.ratelimit.flask_limiter_key, ipv6_prefix=56))
def per_56() -> dict:
    return {"client": request.remote_addr}


# [/app]
