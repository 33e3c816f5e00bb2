"""WSGI adapter: rewrite ``REMOTE_ADDR`` / ``REMOTE_PORT`` before the app runs."""

from __future__ import annotations

import logging
import socket
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ._log import Once
from .address import is_local
from .connection import CONNECTION_GONE, UNIX_PEER, ConnectionResolver
from .core import CACHED_VALUE_LENGTH, BoundedCache, Resolver, peer_resolution
from .forwarding import FORWARDING_HEADERS
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
        #: gunicorn --proxy-protocol: per socket, the answer from its PROXY header.
        self._proxy_by_socket: weakref.WeakKeyDictionary[object, Resolution] = weakref.WeakKeyDictionary()
        #: Set once gunicorn has parsed a PROXY header in this process: from then on,
        #: requests without one are looked up by socket (before it: no cost at all).
        self.proxy_protocol_seen = False
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
        try:  # noqa: SIM105 - as in gunicorn_proxy_protocol
            self._by_socket.put(id(sock), (weakref.ref(sock), found))
        except TypeError:  # not weakly referenceable (a server's stand-in): asked again next time
            pass
        return found

    def gunicorn_proxy_protocol(self, environ: Environ) -> Resolution | None:
        """The connection's answer when gunicorn parsed a PROXY header (``--proxy-protocol``);
        ``None`` for a connection that sent none.

        gunicorn checks its own ``--proxy-allow-from`` and puts the header's
        source in ``REMOTE_ADDR``; for ``LOCAL`` / ``UNKNOWN`` (health checks)
        it leaves ``REMOTE_ADDR`` as ``None``, and the load balancer itself is
        the client: realip asks the socket. Reading what gunicorn found, not
        parsing twice, is the point.

        gunicorn's sync and gthread workers put the header into the environ of
        the connection's *first* request only; the next requests on the same
        keep-alive connection would show the load balancer, whose forwarding
        headers (written by the client) a trusted load balancer would make
        believed. So the answer is kept per socket, for every request of the
        connection.
        """
        sock = environ.get("gunicorn.socket") or environ.get("gunicorn.sock")
        if "PROXY_PROTOCOL" not in environ:
            if sock is None:
                return None
            try:
                return self._proxy_by_socket.get(sock)
            except TypeError:  # not weakly referenceable: nothing kept
                return None
        self.proxy_protocol_seen = True
        client = environ.get("REMOTE_ADDR")
        port = environ.get("REMOTE_PORT")
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
                self._proxy_by_socket[sock] = answer
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


def _unix_listener(environ: Environ) -> bool:
    """Whether this request came in on a Unix-socket listener.

    The socket tells where the server exposes it; elsewhere a listener without
    a TCP port (``SERVER_PORT`` empty or absent) is taken for one.
    """
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if sock is not None:
            return getattr(sock, "family", None) == socket.AF_UNIX
    port = str(environ.get("SERVER_PORT") or "")
    return not (port.isdigit() and int(port) > 0)


def _gone(environ: Environ) -> None:
    """A connection reset before it could be asked about: the app does not run it."""
    environ["realip"] = CONNECTION_GONE
    return None


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
        self._connection = self._apply.connection

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if "PROXY_PROTOCOL" not in environ and not self._connection.proxy_protocol_seen:
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
            return _reject(start_response, gone=environ.get("realip") is CONNECTION_GONE)
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
        #: What is removed from an untrusted peer's request: every forwarding header
        #: (underscore spellings fold into the same keys under WSGI).
        self.strip_keys = tuple(
            dict.fromkeys(_environ_key(name) for name in (*FORWARDING_HEADERS, *([header] if header else [])))
        )
        self._once = Once()
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
            proxied = self.connection.gunicorn_proxy_protocol(environ)  # gunicorn --proxy-protocol read a header
            if proxied is None:
                return self.with_peer(environ, self.peer_entry(environ))
            resolution = proxied
        else:  # from the server integration, held to this middleware's own TOA options
            resolution = self.resolver.admit(connection)
            if resolution is CONNECTION_GONE:
                return _gone(environ)
        return self._headers(environ, resolution, self.key is not None and self.resolver.trusts(resolution))

    def with_peer(self, environ: Environ, entry: _PeerEntry) -> Resolution | None:
        """:meth:`resolve` for a request whose socket peer is looked up (``peer_entry``)."""
        resolution = entry[0]
        if entry[1]:  # a peer that would be trusted: the connection's answer (TOA)
            resolution = self.connection.ask(environ, resolution)
            if resolution is CONNECTION_GONE:
                return _gone(environ)
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
        if key is not None and trusted:
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
            return _write(environ, resolution)
        if self.strip:
            self._strip(environ, resolution)
        return _write(environ, resolution)

    def _strip(self, environ: Environ, resolution: Resolution) -> None:
        """Remove every forwarding header a client (an untrusted peer) sent about itself."""
        stripped = False
        for name in self.strip_keys:
            if name in environ:
                del environ[name]
                stripped = True
        if stripped and resolution.client is not None and is_local(resolution.client[0]):
            self._once(
                logging.WARNING,
                "realip: a peer in private or loopback address space (%s) sent forwarding headers, and realip "
                "removed them because it is not in trusted_proxies. If it is your proxy, add its address to "
                "trusted_proxies (REALIP_TRUSTED_PROXIES); if it is a container runtime's NAT gateway or userland "
                "proxy, the client cannot be recovered here (see docs/proxies.md). Said once.",
                resolution.client[0],
            )

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
            if client is None:
                # No address: a Unix-socket peer only if the listener is one; never cached,
                # since the same (empty) REMOTE_ADDR may come from either.
                if _unix_listener(environ):
                    resolution = UNIX_PEER
                trusted = self.key is not None and self.resolver.trusts(resolution)
                return [resolution, False, trusted, None, None, not trusted and not self.strip, None]
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
                not toa and not trusted and not self.strip,
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


def _reject(start_response: StartResponse, *, gone: bool = False) -> Iterable[bytes]:
    # The reason is in the log, not in the response: it may quote what a client sent.
    # A connection already reset gets an answer nobody reads: the app never ran.
    body = b"Connection reset\n" if gone else b"Bad forwarding header\n"
    start_response(
        "400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]
