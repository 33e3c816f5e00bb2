"""WSGI adapter: rewrite ``REMOTE_ADDR`` / ``REMOTE_PORT`` before the app runs."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ._log import Once
from .connection import ConnectionResolver
from .core import CACHED_VALUE_LENGTH, BoundedCache, Resolver, peer_resolution
from .result import Resolution, Source, make_resolution

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
        #: id(socket) -> (weak reference to it, its answer). Looked up by id, which is
        #: cheap; the weak reference tells a live socket from a new one that got the
        #: same id after the first was closed and freed (then it is a miss).
        self._by_socket: BoundedCache = BoundedCache()
        self._peer_by_socket: weakref.WeakKeyDictionary[object, tuple[str, int]] = weakref.WeakKeyDictionary()
        #: gunicorn --proxy-protocol: per socket, (REMOTE_ADDR, REMOTE_PORT, answer).
        self._proxy_by_socket: weakref.WeakKeyDictionary[object, tuple[Any, Any, Resolution]] = (
            weakref.WeakKeyDictionary()
        )
        self._once = Once()

    def ask(self, environ: Environ, base: Resolution) -> Resolution:
        """The connection's answer for a peer that :meth:`ConnectionResolver.may_ask` about."""
        if not self.resolver.asks_toa:
            return base
        for key in SOCKET_KEYS:
            sock = environ.get(key)
            if sock is not None:
                break
        else:
            return self._without_socket(environ, base)
        cached = self._by_socket.get(id(sock))
        if cached is not None and cached[0]() is sock and cached[1].peer == base.peer:
            return cached[1]  # type: ignore[no-any-return]
        found = self.resolver.resolve(sock, base.peer)
        self._by_socket.put(id(sock), (weakref.ref(sock), found))
        return found

    def gunicorn_proxy_protocol(self, environ: Environ) -> Resolution:
        """The answer when gunicorn has parsed a PROXY header (``--proxy-protocol``).

        gunicorn checks its own ``--proxy-allow-from`` and puts the header's
        source in ``REMOTE_ADDR``; for ``LOCAL`` / ``UNKNOWN`` (health checks)
        it leaves ``REMOTE_ADDR`` as ``None``, and the load balancer itself is
        the client: realip asks the socket (once per connection). Reading what
        gunicorn found, not parsing twice, is the point.
        """
        sock = environ.get("gunicorn.socket") or environ.get("gunicorn.sock")
        client = environ.get("REMOTE_ADDR")
        port = environ.get("REMOTE_PORT")
        if sock is not None:
            # The same answer for every request of the connection: keep it, so that the
            # header cache (keyed by the answer's identity) hits on keep-alive requests.
            try:
                cached = self._proxy_by_socket.get(sock)
            except TypeError:  # not weakly referenceable: nothing kept
                cached = None
            if cached is not None and cached[0] == client and cached[1] == port:
                return cached[2]
        peer = self._socket_peer(sock)
        base = peer_resolution(peer) if peer is not None else peer_resolution(None)  # type: ignore[arg-type]
        if client is None:  # LOCAL / UNKNOWN
            answer = base
        else:
            found = peer_resolution((client, port))
            if found.client is None:
                answer = base
            else:
                hops = (base.client[0],) if base.client is not None else ()
                answer = make_resolution(found.client, base.peer, Source.PROXY_PROTOCOL, hops)
        if sock is not None:
            try:  # noqa: SIM105 - not weakly referenceable: nothing kept
                self._proxy_by_socket[sock] = (client, port, answer)
            except TypeError:
                pass
        return answer

    def _socket_peer(self, sock: Any) -> tuple[str, int] | None:
        if sock is None:
            return None
        found = self._peer_by_socket.get(sock)
        if found is None:
            try:
                name = sock.getpeername()
                found = (str(name[0]), int(name[1]))
            except (OSError, TypeError, ValueError, IndexError):
                return None
            self._peer_by_socket[sock] = found
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
    that same environ, so the log agrees with the application. The decision is
    ``environ["realip"]``, a :class:`~realip.Resolution` that keeps the
    original peer and the source.

    Options are those of :class:`realip.RealIPMiddleware` (``trusted_proxies``,
    ``strategy``, ``on_failure``, ``forwarded_proto``, ``forwarded_host``, ...),
    with the same trust rules: a forwarding header is read only when the peer
    is a trusted proxy, and removed from the environ when it is not. With
    ``forwarded_proto`` / ``forwarded_host`` a trusted proxy's scheme and host
    go into ``wsgi.url_scheme`` and ``HTTP_HOST``.

    ``toa`` (default on) asks the kernel TOA module, once per connection, for
    the NAT64 client behind a load balancer in ``toa_peers`` (default: Huawei
    ELB's ``100.125.0.0/16`` and ``100.126.0.0/16``); a connection from any
    other peer is never asked about, and a host without the module is asked
    once a minute at most. It needs the server to expose the socket (gunicorn,
    Werkzeug, uWSGI ``--http-socket``); on others it says so once in the log.

    Every option can also come from a ``REALIP_*`` variable; a bad value
    raises :class:`~realip.ConfigError` here, at start-up.

    Use with Flask: ``app.wsgi_app = RealIPWSGIMiddleware(app.wsgi_app)``; with
    any WSGI application: ``application = RealIPWSGIMiddleware(application)``.
    """

    def __init__(self, app: WSGIApp, **options: Any) -> None:
        from .config import Settings

        self.app = app
        self.settings = Settings.build(**options)
        self._apply = EnvironResolver(self.settings)
        # Bound methods and the peer cache, looked up once: cheaper to reach per request.
        self._peers = self._apply._peers
        self._peer_entry = self._apply.peer_entry
        self._with_peer = self._apply.with_peer
        self._resolve = self._apply.resolve

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if "PROXY_PROTOCOL" not in environ:
            try:
                entry = self._peers[(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"))]
            except KeyError:
                entry = self._peer_entry(environ)
            if entry[5]:  # the peer is all there is to it (no TOA, no header to read or strip)
                if entry[3] is not None:
                    environ["REMOTE_ADDR"] = entry[3]
                    environ["REMOTE_PORT"] = entry[4]
                environ["realip"] = entry[0]
                return self.app(environ, start_response)
            resolution = self._with_peer(environ, entry)
        else:
            resolution = self._resolve(environ)
        if resolution is None:
            return _reject(start_response)
        return self.app(environ, start_response)


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class EnvironResolver:
    """Decide and apply the answer for one WSGI environ (shared with Django)."""

    def __init__(self, settings: Any) -> None:
        self.resolver = resolver = Resolver(settings)
        self.connection = ConnectionLookup(settings.connection_resolver())
        header = resolver.header
        self.key = _environ_key(header) if header is not None else None
        self.proto_key = "HTTP_X_FORWARDED_PROTO" if settings.forwarded_proto and header != "forwarded" else None
        self.host_key = "HTTP_X_FORWARDED_HOST" if settings.forwarded_host and header != "forwarded" else None
        self.strip = settings.strip_untrusted_headers
        #: (REMOTE_ADDR, REMOTE_PORT) -> _PeerEntry: everything about a peer decided once.
        self._peers = BoundedCache()
        self._one_header = self.proto_key is None and self.host_key is None

    def __call__(self, environ: Environ, connection: Resolution | None = None) -> Resolution | None:
        return self.resolve(environ, connection)

    def resolve(self, environ: Environ, connection: Resolution | None = None) -> Resolution | None:
        """The answer, applied to ``environ``; ``None`` when the request must be rejected.

        ``connection`` is a connection-level answer already made by the server
        integration (Django under an ASGI server), else it is found here.
        """
        if connection is None:
            if "PROXY_PROTOCOL" not in environ:
                return self.with_peer(environ, self.peer_entry(environ))
            resolution = self.connection.gunicorn_proxy_protocol(environ)  # gunicorn --proxy-protocol read a header
        else:
            resolution = connection
        return self._headers(environ, resolution, self.key is not None and self.resolver.trusts(resolution))

    def with_peer(self, environ: Environ, entry: _PeerEntry) -> Resolution | None:
        """:meth:`resolve` for a request whose socket peer is looked up (``peer_entry``)."""
        resolution = entry[0]
        if entry[1]:  # a TOA load balancer: the connection's answer
            resolution = self.connection.ask(environ, resolution)
            if resolution is not entry[0]:
                return self._headers(environ, resolution, self.key is not None and self.resolver.trusts(resolution))
        if entry[2] and self._one_header:
            # A trusted proxy. The keep-alive case: this peer's previous request sent the same text.
            value = environ.get(self.key, "")  # type: ignore[arg-type]
            memo = entry[6]
            if memo is not None and memo[0] == value:
                return _write(environ, memo[1])
            found = self._headers(environ, resolution, True)
            if found is not None and found.error is None and len(value) <= CACHED_VALUE_LENGTH:
                entry[6] = (value, found)  # one assignment: threads see old or new
            return found
        return self._headers(environ, resolution, entry[2])

    def _headers(self, environ: Environ, resolution: Resolution, trusted: bool) -> Resolution | None:
        key = self.key
        if key is not None:
            if trusted:
                resolver = self.resolver
                resolution = resolver.apply(
                    resolution,
                    environ.get(key, ""),
                    environ.get(self.proto_key) if self.proto_key else None,
                    environ.get(self.host_key) if self.host_key else None,
                )
                if resolution.error is not None and resolver.reject:
                    environ["realip"] = resolution
                    return None
            elif self.strip:
                for name in (key, self.proto_key, self.host_key):
                    if name is not None:
                        environ.pop(name, None)
        return _write(environ, resolution)

    def peer_entry(self, environ: Environ) -> _PeerEntry:
        """What is known about the request's socket peer, decided once per peer (cached):

        ``[answer, ask the connection (TOA), trusted proxy, REMOTE_ADDR, REMOTE_PORT,
        nothing else to do, (last header text, answer with it) or None]``. Whether the
        connection may be asked is the configuration and the peer's network; whether it
        is asked now (a host without the module is asked once a minute) is checked per
        request.
        """
        peer = (environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"))
        entry = self._peers.get(peer)
        if entry is None:
            resolution = peer_resolution(peer)  # type: ignore[arg-type]
            client = resolution.client
            toa = client is not None and self.connection.resolver.may_ask(client)
            trusted = self.key is not None and self.resolver.trusts(resolution)
            # REMOTE_ADDR / REMOTE_PORT to write, or None when the text is the same already
            # (an IPv4 peer: only "realip" changes).
            addr = port = None
            if client is not None:
                addr = client[0] if client[0] != peer[0] else None
                port = str(client[1]) if str(client[1]) != peer[1] else None
                if addr is not None or port is not None:  # both written, as _headers does
                    addr, port = client[0], str(client[1])
            entry = [
                resolution,
                toa,
                trusted,
                addr,
                port,
                not toa and (self.key is None or (not trusted and not self.strip)),
                None,  # (last header text, answer with it), for a trusted proxy
            ]
            self._peers.put(peer, entry)
        return entry  # type: ignore[no-any-return]


_PeerEntry = list[Any]


def _write(environ: Environ, resolution: Resolution) -> Resolution:
    """Put an answer into the environ: the client, and a trusted proxy's scheme and host."""
    if resolution.scheme is not None:  # only set with forwarded_proto
        environ["wsgi.url_scheme"] = resolution.scheme
    if resolution.host is not None:  # only set with forwarded_host
        environ["HTTP_HOST"] = resolution.host
    client = resolution.client
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    environ["realip"] = resolution
    return resolution


def _reject(start_response: StartResponse) -> Iterable[bytes]:
    # The reason is in the log, not in the response: it may quote what a client sent.
    body = b"Bad forwarding header\n"
    start_response(
        "400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]
