"""WSGI adapter: rewrite ``REMOTE_ADDR`` / ``REMOTE_PORT`` before the app runs.

Top to bottom, per request: what the server gives (``REMOTE_ADDR`` /
``REMOTE_PORT``, the connection's socket, a PROXY header gunicorn parsed) ->
the peer host's :class:`~realip.memory.PeerFacts`, with this connection's
answer from the transport -> the connection's own answer when it is asked
about (TOA; remembered per socket) -> for a trusted proxy, its header
(:meth:`EnvironResolver.read`; otherwise :meth:`EnvironResolver.peer_answer`)
-> ``REMOTE_ADDR``, ``REMOTE_PORT`` and ``environ["realip"]``.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, Final

from ._context import BINDING
from ._context import current as log_context
from ._log import Once
from .config import Settings
from .connection import ConnectionResolver, proxy_header_read_by_server
from .core import Current, Resolver, cut_header, peer_resolution
from .downstream import rewrite_wsgi
from .forwarding import FORWARDING_HEADERS
from .hints import default_gateway
from .memory import PeerFacts
from .metrics import METRICS
from .result import CONNECTION_GONE, Resolution
from .servers._unsupported import detect as detect_unsupported

__all__ = ["EnvironResolver", "RealIPWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Where WSGI servers put the accepted connection's socket.
SOCKET_KEYS: Final = ("gunicorn.socket", "gunicorn.sock", "werkzeug.socket")

#: The facts of a connection reset before it could be asked about.
_GONE: Final = PeerFacts(CONNECTION_GONE, read=False, strip=False)


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
    go into ``wsgi.url_scheme`` and ``HTTP_HOST``; with ``forwarded_port`` /
    ``forwarded_prefix`` its port into ``SERVER_PORT`` and ``HTTP_HOST``, and
    its prefix in front of ``SCRIPT_NAME``.

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
        self.app = app
        self.settings = Settings.build(**options)
        self._apply = EnvironResolver(self.settings)
        self.memory = self._apply.resolver.memory
        # Looked up once: cheaper to reach per request.
        self._peers = self.memory.peers
        self._peer = self._apply.peer
        self._toa = self._apply.connection.resolver
        self._decide = self._apply.decide
        self._read = self._apply.read
        self._peer_answer = self._apply.peer_answer
        self._header = self._apply.resolver.header
        self._connection = self._apply.connection
        self._downstream = self.settings.downstream_headers

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if "PROXY_PROTOCOL" not in environ and not self._connection.proxy_protocol_seen:
            addr = environ.get("REMOTE_ADDR")
            key = (addr, environ.get("REMOTE_PORT"))
            facts = self._peers.get(addr)
            # facts.current is read once: another thread may make its own connection current.
            if facts is None or (current := facts.current)[0] != key:  # a new host, or another connection
                facts, current = self._peer(environ, key)
            if (current[2] and self._toa.asks_toa) or self._downstream:  # its own answer (TOA), headers to rewrite
                resolution = self._decide(environ, None, facts, current)
                if resolution is not None and self._downstream:  # the headers libraries read hold only the believed
                    rewrite_wsgi(environ, resolution, self._header)
            elif facts.read:  # a trusted proxy: its header decides
                resolution = self._read(environ, facts, current[1])
            else:
                resolution = self._peer_answer(environ, facts, current[1])
        else:
            resolution = self._apply.resolve(environ)
        if resolution is None:
            return _reject(start_response, gone=environ.get("realip") is CONNECTION_GONE)
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.answer(resolution.source)
        if not BINDING.on:  # nothing reads the log context (realip.logcontext is not imported)
            return self.app(environ, start_response)
        token = log_context.set(resolution)
        try:
            return self.app(environ, start_response)
        finally:
            log_context.reset(token)


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class EnvironResolver:
    """Decide and apply the answer for one WSGI environ (shared with Django)."""

    def __init__(self, settings: Settings) -> None:
        self.resolver = resolver = Resolver(settings, gateway=default_gateway())
        self.connection = ConnectionLookup(ConnectionResolver.from_settings(settings), resolver)
        header = resolver.header
        self.key = _environ_key(header) if header is not None else None
        self.proto_key = "HTTP_X_FORWARDED_PROTO" if settings.forwarded_proto and header != "forwarded" else None
        self.host_key = "HTTP_X_FORWARDED_HOST" if settings.forwarded_host and header != "forwarded" else None
        # Forwarded (RFC 7239) has no port or prefix: these two are read with every strategy.
        self.port_key = "HTTP_X_FORWARDED_PORT" if settings.forwarded_port else None
        self.prefix_key = "HTTP_X_FORWARDED_PREFIX" if settings.forwarded_prefix else None
        #: A CDN strategy's own header (cf-connecting-ip...), read for it alone.
        client_header = resolver.client_header
        self.client_key = _environ_key(client_header) if client_header is not None else None
        #: What is removed from an untrusted peer's request: every forwarding header
        #: (underscore spellings fold into the same keys under WSGI).
        self.strip_keys = frozenset(
            _environ_key(name) for name in (*FORWARDING_HEADERS, *(n for n in (header, client_header) if n))
        )
        self.downstream = settings.downstream_headers
        self._plain = (
            self.proto_key is None
            and self.host_key is None
            and self.port_key is None
            and self.prefix_key is None
            and self.client_key is None
        )
        # Per connection: ask about it (TOA)? The clock (a host known to have no module is
        # asked once a minute) is read per request: a connection is never told "no" for good.
        resolver.may_ask = self.connection.resolver.may_ask
        self._once = Once()

    def __call__(self, environ: Environ, connection: Resolution | None = None) -> Resolution | None:
        return self.resolve(environ, connection)

    def peer(self, environ: Environ, key: tuple[Any, Any]) -> tuple[PeerFacts, Current]:
        """The request's peer facts (remembered per peer host) and this connection's
        ``current``; ``key`` is ``(REMOTE_ADDR, REMOTE_PORT)``. A peer without an address
        is a Unix-socket peer only on a Unix-socket listener, and never remembered."""
        found = self.resolver.peer(key)
        if found is None:
            facts = self.resolver.unaddressed(key, unix=_unix_listener(environ))
            return facts, facts.current
        return found

    def resolve(
        self,
        environ: Environ,
        connection: Resolution | None = None,
        *,
        facts: PeerFacts | None = None,
        current: Current | None = None,
    ) -> Resolution | None:
        """The answer, applied to ``environ``; ``None`` when the request must be rejected
        (or its connection is gone: then ``environ["realip"]`` is ``CONNECTION_GONE``).

        ``connection`` is a connection-level answer already made by a server
        integration (Django under an ASGI server); ``facts`` and ``current`` the
        peer's facts and this connection's ``facts.current`` when the caller looked
        them up.
        """
        resolution = self.decide(environ, connection, facts, current)
        if resolution is not None and self.downstream:  # the headers libraries read hold only what was believed
            rewrite_wsgi(environ, resolution, self.resolver.header)
        return resolution

    def decide(
        self,
        environ: Environ,
        connection: Resolution | None,
        facts: PeerFacts | None,
        current: Current | None,
    ) -> Resolution | None:
        """:meth:`resolve` without the downstream headers (the middleware writes them)."""
        if connection is not None:
            facts = self.resolver.connection_facts(connection)
        elif facts is None:
            facts = self.connection.gunicorn_proxy_protocol(environ)  # None: the connection sent no PROXY header
            if facts is None:
                facts, current = self.peer(environ, (environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")))
        if current is None:  # a connection's answer: the same for every request
            current = facts.current
        if current[2]:  # a peer that would be trusted: the connection's own answer (TOA)
            asked = self.connection.ask(environ, facts, current[1])
            if asked is not facts:
                facts, current = asked, asked.current
        base = current[1]
        if facts is _GONE or base is CONNECTION_GONE:
            environ["realip"] = CONNECTION_GONE
            return None
        if facts.read:
            return self.read(environ, facts, base)
        return self.peer_answer(environ, facts, base)

    def peer_answer(self, environ: Environ, facts: PeerFacts, base: Resolution) -> Resolution:
        """The answer for a peer that is not a trusted proxy, applied: the transport's
        (``base``); every forwarding header it sent about itself removed."""
        if facts.strip and not self.strip_keys.isdisjoint(environ):
            self._strip(environ, base)
        client = base.client
        if client is not None and (facts.remote_addr is not None or not client[1]):
            environ["REMOTE_ADDR"] = client[0]  # unwrapped: the canonical address
            environ["REMOTE_PORT"] = str(client[1])  # "0" where the server leaves it out (uWSGI)
        environ["realip"] = base
        return base

    def read(self, environ: Environ, facts: PeerFacts, base: Resolution) -> Resolution | None:
        """The answer for a trusted proxy's request, applied (``base``: the transport's
        answer for its connection); ``None``: reject the request."""
        header_key = self.key
        assert header_key is not None
        value = environ.get(header_key, "")
        if self._plain:  # the header names the client, and nothing else is read
            last = facts.last
            if last is not None and last[0] == value:  # the same text as last time: the keep-alive case
                resolution = last[1] if last[1].peer is base.peer else facts.remembered(value, base)
                if resolution is not None:
                    return _write_client(environ, resolution)
            resolution = self.resolver.read_header(facts, base, value)
            if resolution.error is not None and self._not_believed(environ, resolution):
                return None
            return _write_client(environ, resolution)
        client_key = self.client_key
        client = environ.get(client_key, "") if client_key is not None else ""
        resolution = self.resolver.read(
            base,
            cut_header(value),
            environ.get(self.proto_key) if self.proto_key else None,
            environ.get(self.host_key) if self.host_key else None,
            port=environ.get(self.port_key) if self.port_key else None,
            prefix=environ.get(self.prefix_key) if self.prefix_key else None,
            client=cut_header(client),
        )
        if (
            client_key is not None
            and client
            and resolution.source != self.resolver.client_header
            and self.resolver.settings.strip_untrusted_headers
        ):
            # The CDN's header, not believed (it did not come from the CDN): the app never sees it.
            del environ[client_key]
        if resolution.error is not None and self._not_believed(environ, resolution):
            return None
        return _write(environ, resolution)

    def _not_believed(self, environ: Environ, resolution: Resolution) -> bool:
        """Count a header not (fully) believed; whether the request is then rejected."""
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.not_believed(resolution.error)  # type: ignore[arg-type]
        if self.resolver.reject:
            environ["realip"] = resolution
            return True
        return False

    def _strip(self, environ: Environ, resolution: Resolution) -> None:
        """Remove every forwarding header a client (an untrusted peer) sent about itself."""
        recorder = METRICS.recorder
        for name in self.strip_keys:
            if name in environ:
                del environ[name]
                if recorder is not None:
                    recorder.stripped(name)
        self.resolver.stripped(resolution)


class ConnectionLookup:
    """The connection's own answer for WSGI requests: TOA, and the PROXY header gunicorn parsed.

    gunicorn and Werkzeug hand over the connection's socket object, which is
    the same object for every request of a keep-alive connection and a new one
    for the next connection even when the file descriptor number is reused: the
    answer is remembered per socket (weakly, in :attr:`Memory.sockets`), so a
    connection is asked once and never gets a stale answer. Under uWSGI
    (``--http-socket``) only the descriptor number is known, so each request
    asks again.
    """

    def __init__(self, resolver: ConnectionResolver, decider: Resolver) -> None:
        self.resolver = resolver
        self._decider = decider
        self._sockets = decider.memory.sockets
        #: Set once gunicorn has parsed a PROXY header in this process: from then on,
        #: requests without one are looked up by socket (before it: no cost at all).
        self.proxy_protocol_seen = False
        self._said_without_socket = False
        self._once = Once()

    def ask(self, environ: Environ, facts: PeerFacts, base: Resolution | None = None) -> PeerFacts:
        """The facts of the connection's answer, for a peer :meth:`ConnectionResolver.may_ask`
        about; ``base`` is this connection's answer from the transport (by default
        ``facts.resolution``). ``facts`` itself when the connection has nothing to add."""
        if not self.resolver.asks_toa:
            return facts
        base = base or facts.resolution
        for key in SOCKET_KEYS:
            sock = environ.get(key)
            if sock is not None:
                break
        else:
            return self._without_socket(environ, facts, base)
        found = self._remembered(sock)
        if found is None:
            found = self._remember(sock, self._facts(self.resolver.resolve(sock, base.peer)))
        return found

    def _remembered(self, sock: object) -> PeerFacts | None:
        """The facts kept for this connection's socket, if any."""
        try:
            return self._sockets.get(sock)
        except TypeError:  # not weakly referenceable (a server's stand-in): nothing kept
            return None

    def _remember(self, sock: object, facts: PeerFacts) -> PeerFacts:
        """Keep ``facts`` for as long as the connection's socket lives."""
        try:  # noqa: SIM105 - not weakly referenceable: nothing kept
            self._sockets[sock] = facts
        except TypeError:
            pass
        return facts

    def _facts(self, answer: Resolution) -> PeerFacts:
        """The facts of this connection's answer: its own, never its host's (they are kept
        per socket, and the host's current connection changes)."""
        if answer is CONNECTION_GONE:
            return _GONE
        return self._decider.facts_for(answer)

    def gunicorn_proxy_protocol(self, environ: Environ) -> PeerFacts | None:
        """The connection's facts when gunicorn parsed a PROXY header (``--proxy-protocol``);
        ``None`` for a connection that sent none.

        gunicorn checks its own ``--proxy-allow-from`` and puts the header's
        source in ``REMOTE_ADDR``; for ``LOCAL`` / ``UNKNOWN`` (health checks)
        it leaves ``REMOTE_ADDR`` as ``None``, and the load balancer itself is
        the client. Reading what gunicorn found, not parsing twice, is the point.

        gunicorn's gthread worker puts the header into the environ of the
        connection's *first* request only; the next requests on the same
        keep-alive connection would show the load balancer, whose forwarding
        headers (written by the client) a trusted load balancer would make
        believed. So the answer is kept per socket, for every request of the
        connection.
        """
        sock = environ.get("gunicorn.socket") or environ.get("gunicorn.sock")
        if "PROXY_PROTOCOL" not in environ:
            return None if sock is None else self._remembered(sock)
        self.proxy_protocol_seen = True
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.proxy_accepted()
        client = environ.get("REMOTE_ADDR")  # None for LOCAL / UNKNOWN: the load balancer itself
        found = (client, environ.get("REMOTE_PORT")) if client is not None else None
        answer = proxy_header_read_by_server(peer_resolution(_socket_peer(sock)), found)
        facts = self._decider.facts_for(answer)
        return facts if sock is None else self._remember(sock, facts)

    def _without_socket(self, environ: Environ, facts: PeerFacts, base: Resolution) -> PeerFacts:
        uwsgi_fd = _uwsgi_connection_fd()
        if uwsgi_fd is not None:
            return self._facts(self.resolver.resolve(uwsgi_fd, base.peer))
        if self._said_without_socket:  # said once; nothing more to do per request
            return facts
        self._said_without_socket = True
        limitation = detect_unsupported(environ=environ)
        instead = limitation.instead if limitation is not None else "gunicorn, Werkzeug, uWSGI --http-socket, uvicorn"
        self._once(
            logging.WARNING,
            "realip: TOA lookup needs the connection's socket, and this server (%s) does not expose it; "
            "NAT64 clients will show as the load balancer. Instead: %s (see docs/servers.md).",
            environ.get("SERVER_SOFTWARE", "unknown"),
            instead,
        )
        return facts


def _socket_peer(sock: Any) -> tuple[str, int] | None:
    if sock is None:
        return None
    try:
        name = sock.getpeername()
        return (str(name[0]), int(name[1]))
    except (OSError, TypeError, ValueError, IndexError, AttributeError):
        return None


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


@functools.cache
def _uwsgi() -> Any:
    """The ``uwsgi`` module, importable only inside uWSGI; looked for once per process."""
    try:
        import uwsgi  # only importable inside uWSGI
    except ImportError:
        return None
    return uwsgi


def _uwsgi_connection_fd() -> int | None:
    uwsgi = _uwsgi()
    if uwsgi is None:
        return None
    try:
        return int(uwsgi.connection_fd())
    except Exception:  # pragma: no cover - defensive: never fail a request
        return None


#: The port a URL leaves out, per scheme.
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _write_client(environ: Environ, resolution: Resolution) -> Resolution:
    """Put an answer that changes nothing but the client into the environ."""
    client = resolution.client
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    environ["realip"] = resolution
    return resolution


def _write(environ: Environ, resolution: Resolution) -> Resolution:
    """Put an answer into the environ: the client, and a trusted proxy's scheme, host,
    port (``SERVER_PORT``, and in ``HTTP_HOST`` unless it is the scheme's default,
    as Werkzeug's ``ProxyFix`` ``x_port``) and prefix (in front of ``SCRIPT_NAME``)."""
    if resolution.scheme is not None:  # only set with forwarded_proto
        environ["wsgi.url_scheme"] = resolution.scheme
    if resolution.host is not None:  # only set with forwarded_host
        environ["HTTP_HOST"] = resolution.host
    port = resolution.server_port
    if port is not None:  # only set with forwarded_port
        environ["SERVER_PORT"] = str(port)
        host = environ.get("HTTP_HOST")
        if host:
            if ":" in host and not host.endswith("]"):  # drop the port it had ("]": IPv6 without one)
                host = host.rpartition(":")[0]
            default = _DEFAULT_PORTS.get(environ.get("wsgi.url_scheme", ""))
            environ["HTTP_HOST"] = host if port == default else f"{host}:{port}"
    if resolution.prefix is not None:  # only set with forwarded_prefix
        environ["SCRIPT_NAME"] = resolution.prefix + environ.get("SCRIPT_NAME", "")
    return _write_client(environ, resolution)


def _reject(start_response: StartResponse, *, gone: bool = False) -> Iterable[bytes]:
    # The reason is in the log, not in the response: it may quote what a client sent.
    # A connection already reset gets an answer nobody reads: the app never ran.
    body = b"Connection reset\n" if gone else b"Bad forwarding header\n"
    start_response(
        "400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]
