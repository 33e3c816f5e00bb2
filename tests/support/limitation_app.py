"""Apps that say what realip decided and which limitation realip finds in the server running them.

``asgi_app`` and ``wsgi_app`` answer every request with JSON: the client, the
source, and :func:`realip.servers._unsupported.detect`'s server and message.
"""

from __future__ import annotations

import json
from typing import Any

from realip import RealIPMiddleware, RealIPWSGIMiddleware
from realip.servers._unsupported import Limitation, detect


def _body(client: Any, source: str, limitation: Limitation | None) -> bytes:
    return json.dumps(
        {
            "client": list(client) if client else None,
            "source": source,
            "server": limitation.server if limitation else None,
            "message": limitation.message() if limitation else None,
        }
    ).encode()


async def _asgi(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = _body(scope["client"], scope["extensions"]["realip"].source, detect(scope=scope))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _wsgi(environ: dict, start_response: Any) -> list[bytes]:
    client = (environ["REMOTE_ADDR"], int(environ.get("REMOTE_PORT") or 0))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [_body(client, environ["realip"].source, detect(environ=environ))]


asgi_app = RealIPMiddleware(_asgi)
wsgi_app = RealIPWSGIMiddleware(_wsgi)
