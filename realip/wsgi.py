"""WSGI adapter: rewrite ``REMOTE_ADDR`` / ``REMOTE_PORT`` before the app runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .core import Resolver

__all__ = ["RealIPWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class RealIPWSGIMiddleware:
    """WSGI middleware that gives the application the real client address.

    Rewrites ``environ["REMOTE_ADDR"]`` and ``environ["REMOTE_PORT"]`` in
    place. gunicorn and the Werkzeug dev server write their access log from
    that same environ, so the log agrees with the application.

    The decision is published as ``environ["realip"]``, a
    :class:`~realip.Resolution` that keeps the original peer
    (``environ["realip"].peer``) and the source.

    Use with Flask: ``app.wsgi_app = RealIPWSGIMiddleware(app.wsgi_app)``; with
    any WSGI application: ``application = RealIPWSGIMiddleware(application)``.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self._resolver = Resolver()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        resolution = self._resolver.resolve_peer((environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")))
        client = resolution.client
        if client is not None:
            environ["REMOTE_ADDR"] = client[0]
            environ["REMOTE_PORT"] = str(client[1])
        environ["realip"] = resolution
        return self.app(environ, start_response)
