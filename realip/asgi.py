"""ASGI adapter: rewrite ``scope["client"]`` before the application sees it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._log import Once
from .core import Resolver
from .result import Resolution

__all__ = ["RealIPMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RealIPMiddleware:
    """ASGI middleware that gives the application the real client address.

    For ``http`` and ``websocket`` scopes it rewrites ``scope["client"]`` in
    place, so the server's access log (which reads the same scope after the
    response) shows the same address as the application. ``lifespan`` and
    unknown scope types pass through untouched.

    What it decided, and from what, is published as
    ``scope["extensions"]["realip"]``, a :class:`~realip.Resolution` holding the
    original socket peer and the source (``"peer"``, ``"mapped"``, ...).

    Connection-level answers (the TOA module) need the server's help, because
    ASGI exposes no socket: run uvicorn with ``realip.uvicorn``'s protocols (or
    gunicorn with ``realip.gunicorn.UvicornWorker``). Their answer arrives as
    ``scope["extensions"]["realip.connection"]`` and is taken as the starting
    point. With ``toa=True`` (the default) and no such integration, the first
    request logs once that TOA cannot work on this server.

    Use with FastAPI or Starlette::

        app.add_middleware(RealIPMiddleware)

    or wrap any ASGI application: ``app = RealIPMiddleware(app)``.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        from .config import Settings

        self.app = app
        self.settings = Settings.build(**options)
        self._resolver = Resolver()
        self._once = Once()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" or scope["type"] == "websocket":
            extensions = scope.get("extensions")
            if extensions is None:
                extensions = scope["extensions"] = {}
            connection: Resolution | None = extensions.get("realip.connection")
            if connection is None:
                resolution = self._resolver.resolve_peer(scope.get("client"))
                if self.settings.toa:
                    self._no_integration()
            else:
                resolution = connection
            if resolution.client is not None:
                scope["client"] = resolution.client
            extensions["realip"] = resolution
        await self.app(scope, receive, send)

    def _no_integration(self) -> None:
        self._once(
            logging.INFO,
            "realip: this ASGI server was not started with realip's server integration, so connection-level "
            "answers (TOA) are not available; mapped addresses are still unwrapped. For uvicorn: "
            "--http realip.uvicorn:AutoHTTPProtocol --ws realip.uvicorn:AutoWebSocketsProtocol (docs/toa.md)",
        )
