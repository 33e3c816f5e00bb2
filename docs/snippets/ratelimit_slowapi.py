"""FastAPI with slowapi: one bucket per client network, as realip decided the client.

Shown in docs/downstream/ratelimit.md; served behind a real nginx by
tests/test_ratelimit.py (the trusted proxies come from REALIP_TRUSTED_PROXIES).
"""

# [app]
from fastapi import FastAPI, Request
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address

import realip.ratelimit
from realip import RealIPMiddleware

limiter = Limiter(key_func=realip.ratelimit.slowapi_key)  # IPv6 clients by /64, IPv4 by address

app = FastAPI()
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
app.add_middleware(RealIPMiddleware)  # added last: it runs first, before any limit is checked


@app.get("/")
@limiter.limit("2/minute")
async def index(request: Request) -> dict:
    return {"client": request.client.host, "key": realip.ratelimit.key(request)}  # type: ignore[union-attr]


# [/app]


# slowapi's own key: the address alone (realip made it the client's, not the proxy's);
# a client rotating through the addresses of its /64 gets a new bucket each time.
@app.get("/per-address")
@limiter.limit("2/minute", key_func=get_remote_address)
async def per_address(request: Request) -> dict:
    return {"client": request.client.host}  # type: ignore[union-attr]
