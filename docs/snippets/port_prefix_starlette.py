"""Starlette behind a proxy that serves it under /api, on the port clients use.

The proxy (tests/proxies/nginx-port-prefix.conf) strips ``/api`` and sends
``X-Forwarded-Prefix: /api`` and ``X-Forwarded-Port: 8443``; ``url_for`` then
builds ``http://host:8443/api/items/3``. The proxy's address comes from
``REALIP_TRUSTED_PROXIES``. Shown in docs/proxies.md; run behind a real nginx by
tests/test_forwarded_port_prefix.py.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def item(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "url": str(request.url_for("item", id=request.path_params["id"])),
            "client": request.client.host if request.client else None,
            "root_path": request.scope.get("root_path", ""),
            "forwarded": {k: v for k, v in request.headers.items() if k.startswith("x-forwarded-")},
            "error": request.scope["extensions"]["realip"].error,
        }
    )


# [app]
from realip import RealIPMiddleware  # noqa: E402

app = Starlette(routes=[Route("/items/{id:int}", item, name="item")])
app.add_middleware(
    RealIPMiddleware,  # trusted_proxies: REALIP_TRUSTED_PROXIES
    forwarded_port=True,  # X-Forwarded-Port: the Host header's port and scope["server"]
    forwarded_prefix=True,  # X-Forwarded-Prefix: in front of root_path and path
)
# [/app]
