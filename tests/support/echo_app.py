"""``tests.apps.echo:asgi_app`` for servers that leave out optional scope keys.

The ASGI spec makes a WebSocket scope's ``scheme`` optional (default ``"ws"``);
daphne leaves it out, and the echo app reads it.
"""

from __future__ import annotations

from typing import Any

from tests.apps.echo import asgi_app as _echo


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        scope.setdefault("scheme", "ws")
    await _echo(scope, receive, send)
