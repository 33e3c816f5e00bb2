"""ASGI adapter: rewrite ``scope["client"]`` before the application sees it.

Top to bottom, per request: what the server gives (``scope["client"]``, or
the server integration's connection answer) -> the peer host's
:class:`~realip.memory.PeerFacts` (:meth:`~realip.core.Resolver.peer` for a new
host or connection), with this connection's answer from the transport -> for a
trusted proxy, its header's bytes -> the keep-alive memo or
:meth:`~realip.core.Resolver.read_header` -> ``scope["client"]`` and
``scope["extensions"]["realip"]`` (``RealIPMiddleware.resolve_scope``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from ._context import BINDING
from ._context import current as log_context
from ._log import Once
from .config import Settings
from .core import Current, Resolver
from .downstream import rewrite_asgi
from .forwarding import FORWARDING_HEADERS, MAX_HEADER_LENGTH
from .hints import default_gateway
from .memory import PeerFacts
from .metrics import METRICS
from .result import Resolution
from .servers._unsupported import detect as detect_unsupported

__all__ = ["RealIPMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WEBSOCKET_SCHEMES: Final = {"http": "ws", "https": "wss"}
#: The scope types realip handles: every other one (lifespan...) passes through untouched.
REQUEST_SCOPES: Final = frozenset({"http", "websocket"})
#: Header bytes beyond which nothing is looked at (see :func:`realip.core.cut_header`).
_WINDOW: Final = MAX_HEADER_LENGTH + 1


class RealIPMiddleware:
    """ASGI middleware that gives the application the real client address.

    For ``http`` and ``websocket`` scopes it rewrites ``scope["client"]`` in
    place, so the server's access log (which reads the same scope after the
    response) shows the same address as the application. ``lifespan`` and
    unknown scope types pass through untouched. What it decided, and from what,
    is ``scope["extensions"]["realip"]``, a :class:`~realip.Resolution` with
    the original socket peer and the source (``"peer"``, ``"mapped"``,
    ``"toa"``, a header name).

    **Forwarding headers** are believed only from ``trusted_proxies`` (IPs and
    CIDR networks, a list or a comma-separated string; a peer reported as
    ``::ffff:10.0.0.1`` matches ``10.0.0.0/8``). With none given, no header is
    ever read. ``strategy`` says which header and how (default
    ``"x-forwarded-for"``, walked right to left past trusted proxies; also
    ``"forwarded"`` (RFC 7239), ``"x-forwarded-for:2"`` (exactly 2 proxies),
    ``"x-real-ip"``, ...; see :mod:`realip.strategies`). From an untrusted
    peer the header is removed before the application sees it
    (``strip_untrusted_headers``), since the client wrote it.

    A trusted header that cannot be parsed or walked: ``on_failure="keep"``
    (default) uses the last trusted hop, ``"reject"`` answers 400. Either way
    the reason is in ``Resolution.error`` and the log (rate-limited).

    ``forwarded_proto`` / ``forwarded_host`` (off by default) also take the
    scheme (``ws``/``wss`` for WebSockets) and host from a trusted proxy;
    ``forwarded_port`` / ``forwarded_prefix`` (off by default) its
    ``X-Forwarded-Port`` (into ``scope["server"]`` and the ``Host`` header) and
    ``X-Forwarded-Prefix`` (in front of ``root_path`` and ``path``), with every
    strategy. ``strategy="cloudflare"`` (``"cloudfront"``, ``"fastly"``) reads
    the CDN's own client header from the CDN's addresses, which it trusts itself
    (:class:`~realip.strategies.CDNHeader`).
    ``trust_unix_socket_peers`` trusts a proxy on a Unix socket;
    ``trust_all_peers_unsafe`` reads headers from *any* peer: only for a
    server nothing but the proxy can reach.

    Connection-level answers (the TOA module) need the server's help, because
    ASGI exposes no socket: run uvicorn with ``realip.uvicorn``'s protocols (or
    gunicorn with ``realip.gunicorn.UvicornWorker``). Their answer arrives as
    ``scope["extensions"]["realip.connection"]`` and is the starting point.

    Every option can also come from a ``REALIP_*`` variable (:mod:`realip.config`);
    a bad value raises :class:`~realip.ConfigError` here, at start-up.

    Use with FastAPI or Starlette: ``app.add_middleware(RealIPMiddleware,
    trusted_proxies=["10.0.0.0/8"])``; or wrap any ASGI application.
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.settings = settings = Settings.build(**options)
        self._resolver = resolver = Resolver(settings, gateway=default_gateway())
        self.memory = resolver.memory
        self._peers = resolver.memory.peers
        header = resolver.header
        self._header = header.encode("latin-1") if header is not None else None
        self._proto = b"x-forwarded-proto" if settings.forwarded_proto and header != "forwarded" else None
        self._host = b"x-forwarded-host" if settings.forwarded_host and header != "forwarded" else None
        # Forwarded (RFC 7239) has no port or prefix: these two are read with every strategy.
        self._port = b"x-forwarded-port" if settings.forwarded_port else None
        self._prefix = b"x-forwarded-prefix" if settings.forwarded_prefix else None
        #: A CDN strategy's own header (cf-connecting-ip...), read for it alone.
        client_header = resolver.client_header
        self._client_header = client_header.encode("latin-1") if client_header is not None else None
        #: Only the one header is read and nothing but the client comes from it: the
        #: keep-alive case can be answered from the peer's memo.
        extras = (settings.forwarded_proto, settings.forwarded_host, settings.forwarded_port, settings.forwarded_prefix)
        self._plain = header is not None and client_header is None and not any(extras)
        #: What is removed from an untrusted peer's request: every forwarding header,
        #: and its underscore spelling (which some servers and proxies fold into it).
        names = {*FORWARDING_HEADERS, *(name for name in (header, client_header) if name is not None)}
        self._strip_names = frozenset(
            spelling.encode("latin-1") for name in names for spelling in (name, name.replace("-", "_"))
        )
        self._once = Once()
        self._downstream = settings.downstream_headers
        self._notice_pending = settings.toa  # say once that TOA needs the server integration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in REQUEST_SCOPES:  # lifespan, and anything unknown, pass through
            await self.app(scope, receive, send)
            return
        extensions = scope.get("extensions")
        connection = extensions.get("realip.connection") if extensions else None
        if connection is None:  # what the server reported: facts remembered per peer host
            client = scope.get("client")
            try:
                facts = self._peers.get(client[0])  # type: ignore[index]
            except (TypeError, KeyError, IndexError):  # no address, or not a pair
                facts = None
            if facts is None or ((current := facts.current)[0] is not client and current[0] != client):
                facts, current = self._peer(scope, facts, client)  # a new host, or not the connection of last time
            base = current[1]
        else:  # the connection's answer (TOA, PROXY protocol) from a realip server integration
            facts = self._resolver.connection_facts(connection)
            base = facts.current[1]
        resolution = self.resolve_scope(scope, facts, base)
        if resolution is None:
            await reject(scope, send)
            return
        if BINDING.on:  # something reads the log context (realip.logcontext is imported)
            token = log_context.set(resolution)
            try:
                await self.app(scope, receive, send)
            finally:
                log_context.reset(token)
        else:
            await self.app(scope, receive, send)

    def resolve_scope(self, scope: Scope, facts: PeerFacts, base: Resolution) -> Resolution | None:
        """Decide from the transport's facts and write the answer into the scope.

        ``facts`` are the peer's (or the connection answer's), ``base`` the
        transport's answer for this connection. Returns what was decided, or
        ``None`` when the request must be rejected (``on_failure="reject"``).
        Synchronous: realip's uvicorn protocols call it directly when this
        middleware is the server's app, without a coroutine of its own per request.
        """
        resolution: Resolution | None
        if not facts.read:  # not a trusted proxy: what it says about itself is removed
            resolution = base
            if facts.strip:
                names = self._strip_names
                for name, _ in scope.get("headers", ()):
                    if name in names:
                        self._strip(scope, resolution)
                        break
        elif self._plain:  # a trusted proxy's header names the client, and nothing else is read
            header = self._header
            found = more = None
            for k, v in scope["headers"]:  # all instances, joined with "," (a list header may repeat)
                if k == header:
                    if found is None:
                        found = v
                    elif more is None:
                        more = [found, v]
                    else:
                        more.append(v)
            if more is not None:
                found = b",".join(more)
            elif found is None:
                found = b""
            last = facts.last
            if last is not None and last[0] == found and last[1].peer is base.peer:
                resolution = last[1]  # the keep-alive case: the same text as last time, this connection
            else:
                resolution = self._read(scope, facts, base, found)
                if resolution is None:
                    return None
        else:  # scheme, host, port, prefix or a CDN's own header come from it too
            resolution = self._read_all(scope, base)
            if resolution is None:
                return None
        client = resolution.client
        if client is not None:
            scope["client"] = client
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {"realip": resolution}
        else:
            extensions["realip"] = resolution
        if self._downstream:  # the headers libraries read hold only what was believed
            rewrite_asgi(scope, resolution, self._resolver.header)
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.answer(resolution.source)
        return resolution

    def connection_facts(self, answer: Resolution) -> PeerFacts:
        """The facts of a server integration's connection answer (TOA, PROXY protocol),
        held to this middleware's own options; for :meth:`resolve_scope`."""
        return self._resolver.facts_for(self._resolver.admit(answer))

    def _read(self, scope: Scope, facts: PeerFacts, base: Resolution, found: bytes) -> Resolution | None:
        """A trusted proxy's header text ``found`` (all instances joined), when it alone
        decides and is not this connection's last one; ``None``: reject the request."""
        if facts.last is not None:  # the same text from another connection of this host
            resolution = facts.remembered(found, base)
            if resolution is not None:
                return resolution
        resolution = self._resolver.read_header(facts, base, found)
        if resolution.error is None:
            return resolution
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.not_believed(resolution.error)
        if self._resolver.reject:
            scope.setdefault("extensions", {})["realip"] = resolution
            return None
        return resolution

    def _read_all(self, scope: Scope, base: Resolution) -> Resolution | None:
        """A trusted proxy's header, with what else it sends (scheme, host, port, prefix,
        a CDN's own header); ``None``: reject."""
        headers = scope["headers"]
        resolver = self._resolver
        client = _header_text(headers, self._client_header) if self._client_header else ""
        resolution = resolver.read(
            base,
            _header_text(headers, self._header),  # type: ignore[arg-type]
            _header_text(headers, self._proto) if self._proto else None,
            _header_text(headers, self._host) if self._host else None,
            port=_header_text(headers, self._port) if self._port else None,
            prefix=_header_text(headers, self._prefix) if self._prefix else None,
            client=client,
        )
        if resolution.error is not None:
            recorder = METRICS.recorder
            if recorder is not None:
                recorder.not_believed(resolution.error)
            if resolver.reject:
                scope.setdefault("extensions", {})["realip"] = resolution
                return None
        if client and resolution.source != resolver.client_header and self.settings.strip_untrusted_headers:
            # The CDN's header, not believed (it did not come from the CDN): the app never sees it.
            name = self._client_header
            headers = scope["headers"] = [(k, v) for k, v in headers if k != name]
        if resolution.scheme is not None:
            scheme = resolution.scheme
            scope["scheme"] = _WEBSOCKET_SCHEMES.get(scheme, scheme) if scope["type"] == "websocket" else scheme
        port = resolution.server_port
        if resolution.host is not None or port is not None:
            _set_host(scope, headers, resolution.host, port)
        if resolution.prefix is not None:  # as uvicorn's --root-path: in root_path, and in front of path
            prefix = resolution.prefix
            scope["root_path"] = prefix + scope.get("root_path", "")
            scope["path"] = prefix + scope.get("path", "")
            raw_path = scope.get("raw_path")
            if raw_path is not None:
                scope["raw_path"] = prefix.encode("ascii") + raw_path
        return resolution

    def _strip(self, scope: Scope, resolution: Resolution) -> None:
        names = self._strip_names
        headers = scope["headers"]
        scope["headers"] = [(k, v) for k, v in headers if k not in names]
        recorder = METRICS.recorder
        if recorder is not None:
            for k, _ in headers:
                if k in names:
                    recorder.stripped(k)
        self._resolver.stripped(resolution)

    def _peer(self, scope: Scope, facts: PeerFacts | None, client: Any) -> tuple[PeerFacts, Current]:
        """A new peer host, or another connection from a known one: the facts and this
        connection's answer from the transport (a peer without an address: never remembered)."""
        uvicorn_pair = type(client) is tuple and len(client) == 2 and type(client[1]) is int and 0 < client[1] < 65536
        if facts is not None and uvicorn_pair:  # what uvicorn reports: the pair is the peer
            return facts, facts.connection(client, client)
        if self._notice_pending:  # checked off the keep-alive path: the first request gets here
            self._no_integration(scope)
        found = self._resolver.peer(client)
        if found is None:
            # No address: a Unix-socket peer only if the listener is one (uvicorn reports no server
            # address for it, or a path); a TCP connection whose peer is already gone (reset before
            # getpeername()) also has none, and is never trusted.
            unaddressed = self._resolver.unaddressed(client, unix=_unix_listener(scope))
            return unaddressed, unaddressed.current
        if found[1][1].client[1] == 0:  # type: ignore[index]
            self._check_rewritten_by_server(scope)
        return found

    def _check_rewritten_by_server(self, scope: Scope) -> None:
        """Warn once when the server already took the client from a header.

        uvicorn's own proxy headers (on by default, trusting 127.0.0.1 and ::1)
        replace the client with an ``X-Forwarded-For`` entry and port 0 before
        any middleware runs; the socket peer is then lost to realip.
        """
        if any(k == b"x-forwarded-for" for k, _ in scope.get("headers", ())):
            self._once(
                logging.WARNING,
                "realip: the server took the client address from X-Forwarded-For before realip saw the "
                "connection (port 0): with uvicorn, start it with --no-proxy-headers (or proxy_headers=False), "
                "or use realip's server integration, which turns it off; realip's trusted_proxies then decide",
            )

    def _no_integration(self, scope: Scope) -> None:
        self._notice_pending = False
        limitation = detect_unsupported(scope=scope)
        if limitation is not None:  # a server that cannot give realip the connection at all
            self._once(logging.WARNING, limitation.message())
            return
        self._once(
            logging.INFO,
            "realip: this ASGI server was not started with realip's server integration, so connection-level "
            "answers (TOA, PROXY protocol) are not available; mapped addresses are still unwrapped. Start it "
            "with one: realip serve (or uvicorn --http realip.uvicorn:HttpToolsProtocol --ws "
            "realip.uvicorn:AutoWebSocketsProtocol), gunicorn -k realip.gunicorn.ASGIWorker or -k "
            "realip.gunicorn.UvicornWorker, python -m realip.hypercorn, python -m realip.daphne (docs/servers.md)",
        )


def _unix_listener(scope: Scope) -> bool:
    """Whether the request came in on a Unix-socket listener: uvicorn reports no server
    address for one, or a path without a port."""
    server = scope.get("server")
    return server is None or len(server) < 2 or server[1] is None


#: The port a URL leaves out, per scheme.
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _set_host(scope: Scope, headers: list[tuple[bytes, bytes]], host: str | None, port: int | None) -> None:
    """A trusted proxy's host and port, where servers keep them: the ``Host`` header
    (the port replaced, or left out when it is the scheme's default) and, for the
    port, ``scope["server"]``. A request without a ``Host`` header gets none."""
    if port is not None:
        server = scope.get("server")
        if server is not None and len(server) == 2 and server[1] is not None:
            scope["server"] = (server[0], port)
    if host is None:
        host = next((v.decode("latin-1") for k, v in headers if k == b"host"), None)
        if host is None:
            return
    if port is not None:
        if ":" in host and not host.endswith("]"):  # drop the port it had ("]": IPv6 without one)
            host = host.rpartition(":")[0]
        if port != _DEFAULT_PORTS.get(scope.get("scheme", "")):
            host = f"{host}:{port}"
    value = host.encode("latin-1")
    scope["headers"] = [(k, value if k == b"host" else v) for k, v in headers]


def _header_text(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    """All instances of header ``name``, joined with ``","`` (a list header may repeat)."""
    values = [v for k, v in headers if k == name]
    if not values:
        return ""
    return _text(values[0] if len(values) == 1 else b",".join(values))


def _text(raw: bytes | None) -> str:
    """Header bytes as text; nothing left of the window is decoded (then hashed or split)."""
    if raw is None:
        return ""
    return (raw[-_WINDOW:] if len(raw) > _WINDOW else raw).decode("latin-1")


async def reject(scope: Scope, send: Send) -> None:
    """The answer to a request whose trusted proxy's header is refused (``on_failure="reject"``):
    400, or a WebSocket closed with 1008. The reason is in the log, not in the response:
    it may quote what a client sent."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b"Bad forwarding header\n"
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
