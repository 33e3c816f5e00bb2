"""The end-to-end benchmark's servers: a trivial app that answers with the client it was given.

uvicorn (one worker, httptools, uvloop, no access log), run by ``benchmarks/e2e.py`` as
``python benchmarks/e2e_app.py PORT VARIANT``:

``bare``
    the app alone, uvicorn's proxy headers off;
``realip``
    the app behind ``RealIPMiddleware(trusted_proxies=TRUSTED)`` with realip's protocol
    class (``realip.uvicorn:HttpToolsProtocol``), uvicorn's proxy headers off;
``proxy-headers``
    the app alone with uvicorn's own ``--proxy-headers``, ``--forwarded-allow-ips=TRUSTED``;
``protocol``
    the app alone with realip's protocol class: what the server integration costs by itself
    (it publishes the connection's answer to every request);
``middleware``
    the app behind ``RealIPMiddleware(trusted_proxies=TRUSTED)`` under uvicorn's own protocol,
    as ``app.add_middleware(RealIPMiddleware, ...)`` runs it: the middleware's own coroutine.

gunicorn (sync worker): ``gunicorn 'benchmarks.e2e_app:wsgi("bare")'`` or ``wsgi("realip")``
(``RealIPWSGIMiddleware(trusted_proxies=TRUSTED)``).

Every app answers with the client address it sees, so the benchmark checks, before
timing, that each server read the forwarded header (or ignored it) as configured.

The uvicorn listener is handed over as a socket object (``Server.run(sockets=...)``, as
gunicorn's uvicorn worker does), not with ``--fd``: uvicorn wraps an ``--fd`` listener as
``AF_UNIX``, so its connections never get ``TCP_NODELAY`` and every response waits for a
delayed ACK (about 40 ms).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

TRUSTED = "127.0.0.0/8"  # wrk connects from 127.0.0.1; the header's last entry is 127.0.0.9


async def trivial(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = scope["client"][0].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def trivial_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["REMOTE_ADDR"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def wsgi(variant: str) -> Any:
    """gunicorn's app factory: ``benchmarks.e2e_app:wsgi("bare")`` or ``wsgi("realip")``."""
    if variant == "bare":
        return trivial_wsgi
    if variant == "realip":
        from realip import RealIPWSGIMiddleware

        return RealIPWSGIMiddleware(trivial_wsgi, environ={}, trusted_proxies=TRUSTED)
    raise SystemExit(f"unknown WSGI variant {variant!r}")


def build(variant: str) -> tuple[Any, str, bool]:
    """(app, uvicorn's ``http`` setting, uvicorn's ``proxy_headers``) for a uvicorn variant."""
    if variant == "bare":
        return trivial, "httptools", False
    if variant == "realip":
        from realip import RealIPMiddleware

        return RealIPMiddleware(trivial, environ={}, trusted_proxies=TRUSTED), "realip.uvicorn:HttpToolsProtocol", False
    if variant == "proxy-headers":
        return trivial, "httptools", True
    if variant == "protocol":
        return trivial, "realip.uvicorn:HttpToolsProtocol", False
    if variant == "middleware":
        from realip import RealIPMiddleware

        return RealIPMiddleware(trivial, environ={}, trusted_proxies=TRUSTED), "httptools", False
    raise SystemExit(f"unknown uvicorn variant {variant!r}")


def main() -> None:
    import uvicorn

    port, variant = int(sys.argv[1]), sys.argv[2]
    app, http, proxy_headers = build(variant)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app,
        http=http,
        loop="uvloop",
        access_log=False,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=TRUSTED,
        lifespan="off",
        log_level="warning",
        workers=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
