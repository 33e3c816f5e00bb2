"""The end-to-end benchmark's server: uvicorn (one worker, httptools) and a trivial ASGI app.

Run by ``benchmarks/run.py`` as ``python benchmarks/e2e_app.py PORT VARIANT``. The
listener is a dual-stack ``[::]`` socket (``IPV6_V6ONLY`` off), so IPv4 clients arrive
as ``::ffff:127.0.0.1``, as on a real dual-stack deployment. It is handed to uvicorn as
a socket object (``Server.run(sockets=...)``, as gunicorn's uvicorn worker does), not
with ``--fd``: uvicorn wraps an ``--fd`` listener as ``AF_UNIX``, so its connections
never get ``TCP_NODELAY`` and every response waits for a delayed ACK (about 40 ms).

``VARIANT``:

``plain``
    the app alone;
``passthrough``
    the app behind the thinnest possible ASGI middleware (the floor of any middleware);
``rewrite``
    a reference, not realip: the least any middleware that rewrites the client can do
    (a dict lookup, ``scope["client"]`` and ``scope["extensions"]`` written);
``default``
    the app behind :class:`realip.RealIPMiddleware` with no options (unwraps the mapped
    peer; TOA on, so it says once that the server integration is missing);
``integration``
    the same, with realip's protocol class (``realip.uvicorn.HttpToolsProtocol``): a
    TOA lookup once per connection, its answer handed over per request in
    ``scope["extensions"]["realip.connection"]``;
``plain-proxied`` / ``trusted``
    the app alone / behind ``RealIPMiddleware(trusted_proxies="127.0.0.0/8")``, for
    requests that carry ``X-Forwarded-For`` (read and believed: the peer is trusted).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

BODY = b"ok\n"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
DONE = {"type": "http.response.body", "body": BODY}


async def trivial(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(START)
    await send(DONE)


def build(variant: str) -> tuple[Any, str]:
    """(app, uvicorn's ``http`` setting) for a variant."""
    if variant in ("plain", "plain-proxied"):
        return trivial, "httptools"
    from realip import RealIPMiddleware

    if variant == "passthrough":  # calibration only

        class PassThrough:
            def __init__(self, app: Any) -> None:
                self.app = app

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                await self.app(scope, receive, send)

        return PassThrough(trivial), "httptools"
    if variant == "rewrite":  # a reference: the least a client-rewriting middleware does (run.RewriteOnly)

        class RewriteOnly:
            def __init__(self, app: Any) -> None:
                self.app = app
                self.peers: dict[Any, Any] = {}

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] != "http":
                    await self.app(scope, receive, send)
                    return
                peer = scope["client"]
                client = self.peers.get(peer)
                if client is None:
                    client = self.peers[peer] = (peer[0].removeprefix("::ffff:"), peer[1])
                scope["client"] = client
                scope["extensions"] = {"realip": client}
                await self.app(scope, receive, send)

        return RewriteOnly(trivial), "httptools"
    if variant == "default":
        return RealIPMiddleware(trivial, environ={}), "httptools"
    if variant == "integration":
        return RealIPMiddleware(trivial, environ={}), "realip.uvicorn:HttpToolsProtocol"
    if variant == "trusted":
        return RealIPMiddleware(trivial, environ={}, trusted_proxies="127.0.0.0/8"), "httptools"
    raise SystemExit(f"unknown variant {variant!r}")


def main() -> None:
    import uvicorn

    port, variant = int(sys.argv[1]), sys.argv[2]
    app, http = build(variant)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    config = uvicorn.Config(
        app, http=http, access_log=False, proxy_headers=False, lifespan="off", log_level="warning", workers=1
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
