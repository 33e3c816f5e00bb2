"""Django adapter: ``"realip.django.RealIPMiddleware"`` in ``MIDDLEWARE``.

Works under WSGI and ASGI Django. Put it first in ``MIDDLEWARE`` so that every
later middleware (sessions, CSRF, rate limits, logging) sees the real address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .wsgi import EnvironResolver

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
        self._environ = EnvironResolver(self.settings)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        return self._apply(request) or self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        return self._apply(request) or await self.get_response(request)

    def _apply(self, request: Any) -> Any:
        """Apply the answer to the request; a 400 response when it must be rejected."""
        scope = getattr(request, "scope", None)
        # WSGIRequest: META is the server's environ. ASGIRequest: META was built
        # from the scope, and the ASGI server logs from the scope.
        connection = scope.get("extensions", {}).get("realip.connection") if scope is not None else None
        resolution = self._environ(request.META, connection)
        if resolution is None:
            from django.http import HttpResponseBadRequest

            return HttpResponseBadRequest("Bad forwarding header\n", content_type="text/plain; charset=utf-8")
        if scope is not None and resolution.client is not None:
            scope["client"] = resolution.client
        request.realip = resolution
        return None
