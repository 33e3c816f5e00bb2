"""Starlette behind Cloudflare, then a load balancer of your own at 10.0.0.0/8.

Cloudflare's published ranges (the named list ``cloudflare``, read once at
start-up) and the load balancer are the trusted proxies; both append to
``X-Forwarded-For``. Shown in docs/providers/*.md; run by tests/test_ranges.py.
"""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def whoami(request: Request) -> JSONResponse:
    realip = request.scope["extensions"]["realip"]
    return JSONResponse({"client": request.client.host, "source": realip.source, "hops": list(realip.hops)})


# [app]
from realip import RealIPMiddleware, ranges  # noqa: E402

app = Starlette(
    routes=[Route("/", whoami)],
    middleware=[
        Middleware(
            RealIPMiddleware,
            # Cloudflare's networks (cache copy if `realip ranges update` ran, else the shipped one),
            # then your own load balancer; the default strategy walks X-Forwarded-For from the right.
            trusted_proxies=[*ranges.networks("cloudflare"), "10.0.0.0/8"],
        )
    ],
)
# [/app]
