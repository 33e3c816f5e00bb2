"""ASGI adapter: rewrite ``scope["client"]`` before the application sees it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .core import Resolver

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

    Use with FastAPI or Starlette::

        app.add_middleware(RealIPMiddleware)

    or wrap any ASGI application: ``app = RealIPMiddleware(app)``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._resolver = Resolver()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" or scope["type"] == "websocket":
            resolution = self._resolver.resolve_peer(scope.get("client"))
            if resolution.client is not None:
                scope["client"] = resolution.client
            extensions = scope.get("extensions")
            if extensions is None:
                scope["extensions"] = {"realip": resolution}
            else:
                extensions["realip"] = resolution
        await self.app(scope, receive, send)
