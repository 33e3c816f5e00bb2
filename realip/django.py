"""Django adapter: ``"realip.django.RealIPMiddleware"`` in ``MIDDLEWARE``.

Works under WSGI and ASGI Django. Put it first in ``MIDDLEWARE`` so that every
later middleware (sessions, CSRF, rate limits, logging) sees the real address.

Add ``"realip.django.RealIPConfig"`` to ``INSTALLED_APPS`` as well, and
``manage.py check`` (and every command that runs the system checks) checks
realip's configuration before anything is served:

``realip.E001`` (error)
    ``settings.REALIP`` or a ``REALIP_*`` variable is not valid: an unknown
    option, a bad network (``"10.0.0.0/33"``), a bad strategy. The message
    names the option and the value, the hint says what is wrong.
``realip.W001`` (warning)
    ``RealIPMiddleware`` is in ``MIDDLEWARE`` but not first: the middlewares
    before it see the proxy's or the load balancer's address.
``realip.W002`` (warning)
    ``RealIPMiddleware`` is not in ``MIDDLEWARE`` at all.

The checks are registered when this module is imported, so they also run in a
project that only lists the middleware, once something has imported it.
Silence one with ``SILENCED_SYSTEM_CHECKS = ["realip.W001"]``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core import checks
from django.utils.module_loading import import_string

from ._context import BINDING, current
from .config import Settings
from .errors import ConfigError
from .metrics import METRICS
from .wsgi import EnvironResolver

__all__ = ["MIDDLEWARE_PATH", "RealIPConfig", "RealIPMiddleware", "check_middleware_order", "check_settings"]

#: How ``MIDDLEWARE`` names realip's middleware.
MIDDLEWARE_PATH: Final = "realip.django.RealIPMiddleware"


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

        self.get_response = get_response
        options = getattr(settings, "REALIP", {})
        if not isinstance(options, dict):
            raise ConfigError("settings.REALIP", options, "expected a dict of realip options")
        self.settings = Settings.build(**options)
        self._environ = EnvironResolver(self.settings)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        rejected = self._apply(request)
        if rejected is not None:
            return rejected
        if not BINDING.on:  # nothing reads the log context (realip.logcontext is not imported)
            return self.get_response(request)
        token = current.set(request.realip)
        try:
            return self.get_response(request)
        finally:
            current.reset(token)

    async def __acall__(self, request: Any) -> Any:
        rejected = self._apply(request)
        if rejected is not None:
            return rejected
        if not BINDING.on:
            return await self.get_response(request)
        token = current.set(request.realip)
        try:
            return await self.get_response(request)
        finally:
            current.reset(token)

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
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.answer(resolution.source)
        return None


# ---- system checks (manage.py check) -------------------------------------------


def _settings_error(error: ConfigError, options: dict[str, Any]) -> checks.Error:
    """``realip.E001`` for one :class:`~realip.ConfigError`: the option and value, the reason as the hint."""
    known = [field.name for field in fields(Settings)]
    hint = error.why
    if error.option in options and error.option not in known:
        close = difflib.get_close_matches(error.option, known, n=1)
        if close:
            hint = f"did you mean {close[0]!r}? {hint}"
    where = "settings.REALIP" if error.option in options else "environment"
    return checks.Error(f"{error.option}: {error.value!r} is not valid", hint=hint, obj=where, id="realip.E001")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``realip.E001``: ``settings.REALIP`` and the ``REALIP_*`` variables build
    the middleware's settings, as :class:`RealIPMiddleware` would at start-up.

    Every bad option and variable is reported, not only the first: after an
    error it is left out and the rest built again.
    """
    options = getattr(django_settings, "REALIP", {})
    if not isinstance(options, dict):
        return [
            checks.Error(
                f"settings.REALIP must be a dict of realip options, not {type(options).__name__}",
                hint='e.g. REALIP = {"trusted_proxies": ["10.0.0.0/8"]}',
                obj="settings.REALIP",
                id="realip.E001",
            )
        ]
    errors = []
    remaining = dict(options)
    environ = {name: value for name, value in os.environ.items() if name.startswith("REALIP_")}
    for _ in range(len(options) + len(environ) + 1):
        try:
            Settings.build(environ, **remaining)
        except ConfigError as error:
            errors.append(_settings_error(error, options))
            if error.option in remaining:
                del remaining[error.option]
            elif error.option in environ:
                del environ[error.option]
            else:
                break  # options that fail only together: reported once
        else:
            break
    return errors


def _is_realip_middleware(path: object) -> bool:
    if path == MIDDLEWARE_PATH:
        return True
    if not isinstance(path, str):
        return False
    try:
        found = import_string(path)
    except Exception:  # Django reports a middleware it cannot import when it loads them
        return False
    return isinstance(found, type) and issubclass(found, RealIPMiddleware)


def check_middleware_order(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``realip.W001``: realip's middleware is not first in ``MIDDLEWARE``;
    ``realip.W002``: it is not there at all. A subclass counts as realip's."""
    middleware = list(getattr(django_settings, "MIDDLEWARE", None) or [])
    index = next((i for i, path in enumerate(middleware) if _is_realip_middleware(path)), None)
    if index is None:
        return [
            checks.Warning(
                "realip's middleware is not in MIDDLEWARE: REMOTE_ADDR is the socket peer, as the server reported it",
                hint=f'put "{MIDDLEWARE_PATH}" first in MIDDLEWARE',
                obj="settings.MIDDLEWARE",
                id="realip.W002",
            )
        ]
    if index == 0:
        return []
    before = ", ".join(str(path) for path in middleware[:index])
    return [
        checks.Warning(
            f'"{middleware[index]}" is not first in MIDDLEWARE',
            hint=f"move it first: the middlewares before it ({before}) see the proxy's or the load balancer's "
            "address, not the client's",
            obj="settings.MIDDLEWARE",
            id="realip.W001",
        )
    ]


def _register_checks() -> None:
    # The registry keeps a set: registering again (import, then ready()) changes nothing.
    checks.register(check_settings)
    checks.register(check_middleware_order)


class RealIPConfig(AppConfig):
    """``INSTALLED_APPS = [..., "realip.django.RealIPConfig"]``: ``manage.py
    check`` then runs :func:`check_settings` and :func:`check_middleware_order`.
    No models, no migrations."""

    name = "realip.django"
    label = "realip"
    verbose_name = "realip"

    def ready(self) -> None:
        _register_checks()


_register_checks()
