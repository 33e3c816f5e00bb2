"""WSGI adapter: rewrite ``REMOTE_ADDR`` / ``REMOTE_PORT`` before the app runs."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ._log import Once
from .connection import ConnectionResolver
from .core import Resolver
from .result import Resolution

__all__ = ["RealIPWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Where WSGI servers put the accepted connection's socket (servers.md).
SOCKET_KEYS = ("gunicorn.socket", "gunicorn.sock", "werkzeug.socket")


class ConnectionLookup:
    """The connection-level answer (TOA) for WSGI requests.

    gunicorn and Werkzeug hand over the connection's socket object, which is
    the same object for every request of a keep-alive connection and a new one
    for the next connection even when the file descriptor number is reused: a
    weak-keyed table of answers per socket gives one lookup per connection and
    no stale answers. Under uWSGI (``--http-socket``) only the descriptor
    number is known, so each request asks again.
    """

    def __init__(self, resolver: ConnectionResolver) -> None:
        self.resolver = resolver
        self._by_socket: weakref.WeakKeyDictionary[object, Resolution] = weakref.WeakKeyDictionary()
        self._once = Once()

    def __call__(self, environ: Environ, base: Resolution) -> Resolution:
        """``base`` (the peer's answer) or the connection's, for a TOA peer."""
        if not self.resolver.wants(base.client):
            return base
        for key in SOCKET_KEYS:
            sock = environ.get(key)
            if sock is not None:
                break
        else:
            return self._without_socket(environ, base)
        found = self._by_socket.get(sock)
        if found is None or found.peer != base.peer:
            found = self.resolver.resolve(sock, base.peer)
            self._by_socket[sock] = found
        return found

    def _without_socket(self, environ: Environ, base: Resolution) -> Resolution:
        uwsgi_fd = _uwsgi_connection_fd()
        if uwsgi_fd is not None:
            return self.resolver.resolve(uwsgi_fd, base.peer)
        self._once(
            logging.WARNING,
            "realip: TOA lookup needs the connection's socket, and this server (%s) does not expose it; "
            "NAT64 clients will show as the load balancer. Servers that do: gunicorn, Werkzeug, uWSGI "
            "--http-socket, uvicorn (see docs/toa.md).",
            environ.get("SERVER_SOFTWARE", "unknown"),
        )
        return base


def _uwsgi_connection_fd() -> int | None:
    try:
        import uwsgi  # type: ignore[import-not-found]  # only importable inside uWSGI
    except ImportError:
        return None
    try:
        return int(uwsgi.connection_fd())
    except Exception:  # pragma: no cover - defensive: never fail a request
        return None


class RealIPWSGIMiddleware:
    """WSGI middleware that gives the application the real client address.

    Rewrites ``environ["REMOTE_ADDR"]`` and ``environ["REMOTE_PORT"]`` in
    place. gunicorn and the Werkzeug dev server write their access log from
    that same environ, so the log agrees with the application.

    The decision is published as ``environ["realip"]``, a
    :class:`~realip.Resolution` that keeps the original peer
    (``environ["realip"].peer``) and the source.

    ``toa`` (default on) asks the kernel TOA module, once per connection, for
    the NAT64 client behind a load balancer in ``toa_peers`` (default: Huawei
    ELB's ``100.125.0.0/16`` and ``100.126.0.0/16``); a connection from any other
    peer is never asked about, and a host without the module is asked once a
    minute at most. Both can also come from ``REALIP_TOA`` /
    ``REALIP_TOA_PEERS``; an argument given here wins.

    Use with Flask: ``app.wsgi_app = RealIPWSGIMiddleware(app.wsgi_app)``; with
    any WSGI application: ``application = RealIPWSGIMiddleware(application)``.
    """

    def __init__(self, app: WSGIApp, **options: Any) -> None:
        from .config import Settings

        self.app = app
        self.settings = Settings.build(**options)
        self._resolver = Resolver()
        self._connection = ConnectionLookup(self.settings.connection_resolver())

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        resolve(self._resolver, self._connection, environ)
        return self.app(environ, start_response)


def resolve(resolver: Resolver, connection: ConnectionLookup, environ: Environ) -> Resolution:
    """Decide and apply the answer for one WSGI environ (shared with Django)."""
    resolution = resolver.resolve_peer((environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")))
    resolution = connection(environ, resolution)
    client = resolution.client
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    environ["realip"] = resolution
    return resolution
