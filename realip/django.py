"""Django adapter: ``"realip.django.RealIPMiddleware"`` in ``MIDDLEWARE``.

Works under WSGI and ASGI Django. Put it first in ``MIDDLEWARE`` so that every
later middleware (sessions, CSRF, rate limits, logging) sees the real address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .core import Resolver

__all__ = ["RealIPMiddleware"]


class RealIPMiddleware:
    """Rewrites ``request.META["REMOTE_ADDR"]`` / ``["REMOTE_PORT"]``.

    Under WSGI, ``request.META`` *is* the server's environ, so gunicorn's access
    log shows the rewritten address. Under ASGI, ``request.scope["client"]`` is
    rewritten too, for the ASGI server's access log.

    The decision is ``request.realip`` (also ``request.META["realip"]``), a
    :class:`~realip.Resolution` with the original peer and the source.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._resolver = Resolver()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        self._apply(request)
        return self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        self._apply(request)
        return await self.get_response(request)

    def _apply(self, request: Any) -> None:
        meta = request.META
        scope = getattr(request, "scope", None)
        if scope is not None:  # ASGIRequest
            resolution = self._resolver.resolve_peer(scope.get("client"))
            if resolution.client is not None:
                scope["client"] = resolution.client
        else:
            resolution = self._resolver.resolve_peer((meta.get("REMOTE_ADDR"), meta.get("REMOTE_PORT")))
        if resolution.client is not None:
            meta["REMOTE_ADDR"] = resolution.client[0]
            meta["REMOTE_PORT"] = str(resolution.client[1])
        meta["realip"] = resolution
        request.realip = resolution
