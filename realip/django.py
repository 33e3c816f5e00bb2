"""Django adapter: ``"realip.django.RealIPMiddleware"`` in ``MIDDLEWARE``.

Works under WSGI and ASGI Django. Put it first in ``MIDDLEWARE`` so that every
later middleware (sessions, CSRF, rate limits, logging) sees the real address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .core import Resolver
from .wsgi import ConnectionLookup
from .wsgi import resolve as resolve_environ

__all__ = ["RealIPMiddleware"]


class RealIPMiddleware:
    """Rewrites ``request.META["REMOTE_ADDR"]`` / ``["REMOTE_PORT"]``.

    Under WSGI, ``request.META`` *is* the server's environ, so gunicorn's access
    log shows the rewritten address. Under ASGI, ``request.scope["client"]`` is
    rewritten too, for the ASGI server's access log.

    The decision is ``request.realip`` (also ``request.META["realip"]``), a
    :class:`~realip.Resolution` with the original peer and the source.

    Options come from ``settings.REALIP``, a dict of the same keyword arguments
    :class:`realip.RealIPWSGIMiddleware` takes, e.g.
    ``REALIP = {"toa_peers": ["10.0.0.0/24"]}``; then from ``REALIP_*``
    environment variables. Bad values fail when Django loads the middleware.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.conf import settings

        from .config import Settings

        self.get_response = get_response
        options = getattr(settings, "REALIP", {})
        if not isinstance(options, dict):
            from .errors import ConfigError

            raise ConfigError("settings.REALIP", options, "expected a dict of realip options")
        self.settings = Settings.build(**options)
        self._resolver = Resolver()
        self._connection = ConnectionLookup(self.settings.connection_resolver())
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
        if scope is None:  # WSGIRequest: META is the server's environ
            request.realip = resolve_environ(self._resolver, self._connection, meta)
            return
        # ASGIRequest: the ASGI server logs from the scope, Django reads META.
        connection = scope.get("extensions", {}).get("realip.connection")
        resolution = connection or self._resolver.resolve_peer(scope.get("client"))
        if resolution.client is not None:
            scope["client"] = resolution.client
            meta["REMOTE_ADDR"] = resolution.client[0]
            meta["REMOTE_PORT"] = str(resolution.client[1])
        meta["realip"] = resolution
        request.realip = resolution
