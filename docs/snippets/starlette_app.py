"""Starlette behind proxies that write RFC 7239 ``Forwarded``, with the scheme too.

Shown in docs/frameworks.md; run by tests/test_docs.py.
"""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def whoami(request: Request) -> JSONResponse:
    realip = request.scope["extensions"]["realip"]
    return JSONResponse({"client": request.client.host, "scheme": request.url.scheme, "source": realip.source})


# [app]
from realip import RealIPMiddleware  # noqa: E402

app = Starlette(
    routes=[Route("/", whoami)],
    middleware=[
        Middleware(
            RealIPMiddleware,
            trusted_proxies=["10.0.0.0/8", "fd00::/8"],
            strategy="forwarded",  # RFC 7239: for=, proto=, host=
            forwarded_proto=True,  # request.url.scheme from the trusted proxy's proto=
        )
    ],
)
# [/app]
