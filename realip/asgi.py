"""ASGI adapter: rewrite ``scope["client"]`` before the application sees it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from ._log import Once
from .address import is_local
from .connection import UNIX_PEER
from .core import CACHED_VALUE_LENGTH, BoundedCache, Resolver, peer_resolution
from .forwarding import FORWARDING_HEADERS
from .result import Resolution

__all__ = ["RealIPMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}
#: What a peer's forwarding headers get (decided once per peer): read (a trusted proxy), stripped.
_READ: Final = "read"
_STRIP: Final = "strip"


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
    scheme (``ws``/``wss`` for WebSockets) and host from a trusted proxy.
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
        from .config import Settings

        self.app = app
        self.settings = Settings.build(**options)
        self._resolver = resolver = Resolver(self.settings)
        header = resolver.header
        self._header = header.encode("latin-1") if header is not None else None
        self._proto = b"x-forwarded-proto" if self.settings.forwarded_proto and header != "forwarded" else None
        self._host = b"x-forwarded-host" if self.settings.forwarded_host and header != "forwarded" else None
        self._strip = self.settings.strip_untrusted_headers
        #: What is removed from an untrusted peer's request: every forwarding header,
        #: and its underscore spelling (which some servers and proxies fold into it).
        names = {*FORWARDING_HEADERS, *([header] if header is not None else [])}
        self._strip_names = frozenset(
            spelling.encode("latin-1") for name in names for spelling in (name, name.replace("-", "_"))
        )
        self._once = Once()
        # Decided once, here, so that the per-request path reads one attribute for each.
        self._notice_pending = self.settings.toa  # say once that TOA needs the server integration
        #: Only the one header is read and nothing but the client comes from it: the
        #: keep-alive case can be answered from the entry's memo.
        self._plain = (
            header is not None
            and self._proto is None
            and self._host is None
            and not self.settings.forwarded_proto
            and not self.settings.forwarded_host
        )
        #: socket peer -> entry, and id(connection answer) -> entry; an entry is
        #: ``[answer, _READ / _STRIP / None, (last header bytes, answer with it) or None]``.
        #: A keep-alive connection's next request is one dictionary lookup (and,
        #: behind a proxy, one comparison of the header).
        self._peers = BoundedCache()
        self._connections = BoundedCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            await self.app(scope, receive, send)
            return
        extensions = scope["extensions"] if "extensions" in scope else None  # noqa: SIM401 - cheaper than .get()
        connection = extensions.get("realip.connection") if extensions is not None else None
        if connection is None:
            try:
                entry = self._peers[scope["client"]]
            except (KeyError, TypeError):  # a new peer; TypeError: a server that reports a list
                entry = self._peer_entry(scope.get("client"), scope)
        else:  # the connection's answer (TOA, PROXY protocol) from realip.uvicorn
            entry = self._connections.get(id(connection))
            if entry is None or entry[0] is not connection:  # (the entry holds it: its id is not reused)
                entry = self._connection_entry(connection)
        resolution = entry[0]
        action = entry[1]
        if action is _READ:  # a trusted proxy: its header decides
            if self._plain:
                # All instances of the header, joined with "," (a list header may repeat).
                header = self._header
                found = more = None
                for k, v in scope["headers"]:
                    if k == header:
                        if found is None:
                            found = v
                        elif more is None:
                            more = [found, v]
                        else:
                            more.append(v)
                if more is not None:
                    found = b",".join(more)
                memo = entry[2]
                if memo is not None and memo[0] == found:
                    # The keep-alive case: the previous request on this connection sent the same text.
                    resolution = memo[1]
                else:  # decide (cached per text; a failure is logged, and never remembered here)
                    resolution = self._resolver.apply(resolution, found.decode("latin-1") if found is not None else "")
                    if resolution.error is None:
                        if found is None or len(found) <= CACHED_VALUE_LENGTH:  # memory stays bounded
                            entry[2] = (found, resolution)  # one assignment: threads see the old pair or the new
                    elif self._resolver.reject:
                        if extensions is None:
                            scope["extensions"] = {}
                        await _reject(scope, send)
                        return
            else:
                resolver = self._resolver
                resolution = resolver.apply(
                    resolution,
                    _header_text(scope["headers"], self._header),  # type: ignore[arg-type]
                    _header_text(scope["headers"], self._proto) if self._proto else None,
                    _header_text(scope["headers"], self._host) if self._host else None,
                )
                if resolution.error is not None and resolver.reject:
                    if extensions is None:
                        scope["extensions"] = {}
                    await _reject(scope, send)
                    return
                if resolution.scheme is not None:
                    scheme = resolution.scheme
                    scope["scheme"] = _WEBSOCKET_SCHEMES.get(scheme, scheme) if scope_type == "websocket" else scheme
                if resolution.host is not None:
                    value = resolution.host.encode("latin-1")
                    scope["headers"] = [(k, value if k == b"host" else v) for k, v in scope["headers"]]
        elif action is _STRIP:  # anyone else: what it says about itself is removed
            headers = scope.get("headers", ())
            names = self._strip_names
            for k, _ in headers:
                if k in names:
                    scope["headers"] = [(k, v) for k, v in headers if k not in names]
                    if resolution.client is not None and is_local(resolution.client[0]):
                        self._private_peer_sends_headers(resolution.client[0])
                    break
        client = resolution.client
        if client is not None:
            scope["client"] = client
        if extensions is None:
            scope["extensions"] = {"realip": resolution}
        else:
            extensions["realip"] = resolution
        await self.app(scope, receive, send)

    def _peer_entry(self, client: Any, scope: Scope) -> list[Any]:
        """The entry for a socket peer (see ``_peers``), cached per peer."""
        if self._notice_pending:  # checked on a new peer only: the first request is one
            self._no_integration()
        if client is None:
            # No address: a Unix-socket peer only if the listener is one (uvicorn reports no
            # server address for it, or a path); a TCP connection whose peer is already gone
            # (reset before getpeername()) also has none, and is never trusted. Not cached.
            server = scope.get("server")
            unix = server is None or len(server) < 2 or server[1] is None
            resolution = UNIX_PEER if unix else self._resolver.resolve_peer(None)
            return [resolution, self._action(resolution), None]
        key = tuple(client)
        entry = self._peers.get(key)
        if entry is None:
            resolution = peer_resolution(key)
            entry = [resolution, self._action(resolution), None]
            if key[1] == 0 and resolution.client is not None:
                self._check_rewritten_by_server(scope)
            self._peers.put(key, entry)
        return entry  # type: ignore[no-any-return]

    def _connection_entry(self, connection: Resolution) -> list[Any]:
        """The entry for a connection's answer, cached per answer (one per connection)."""
        admitted = self._resolver.admit(connection)
        entry = [admitted, self._action(admitted), None]
        self._connections.put(id(connection), entry)
        return entry

    def _check_rewritten_by_server(self, scope: Scope) -> None:
        """Warn once when the server already took the client from a header.

        uvicorn's own proxy headers (on by default, trusting 127.0.0.1 and ::1)
        replace the client with an ``X-Forwarded-For`` entry and port 0 before
        any middleware runs; the socket peer is then lost to realip.
        """
        if any(k == b"x-forwarded-for" for k, _ in scope["headers"]):
            self._once(
                logging.WARNING,
                "realip: the server took the client address from X-Forwarded-For before realip saw the "
                "connection (port 0): with uvicorn, start it with --no-proxy-headers (or proxy_headers=False), "
                "or use realip's server integration, which turns it off; realip's trusted_proxies then decide",
            )

    def _private_peer_sends_headers(self, host: str) -> None:
        self._once(
            logging.WARNING,
            "realip: a peer in private or loopback address space (%s) sent forwarding headers, and realip removed "
            "them because it is not in trusted_proxies. If it is your proxy, add its address to trusted_proxies "
            "(REALIP_TRUSTED_PROXIES); if it is a container runtime's NAT gateway or userland proxy, the client "
            "cannot be recovered here (see docs/proxies.md). Said once.",
            host,
        )

    def _action(self, resolution: Resolution) -> str | None:
        """What the forwarding headers of this peer's requests get: read, stripped, or nothing."""
        if self._header is not None and self._resolver.trusts(resolution):
            return _READ
        return _STRIP if self._strip else None

    def _no_integration(self) -> None:
        self._notice_pending = False
        self._once(
            logging.INFO,
            "realip: this ASGI server was not started with realip's server integration, so connection-level "
            "answers (TOA) are not available; mapped addresses are still unwrapped. For uvicorn: "
            "--http realip.uvicorn:AutoHTTPProtocol --ws realip.uvicorn:AutoWebSocketsProtocol (docs/toa.md)",
        )


def _header_text(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    """All instances of header ``name``, joined with ``","`` (a list header may repeat)."""
    values = [v for k, v in headers if k == name]
    if not values:
        return ""
    joined = values[0] if len(values) == 1 else b",".join(values)
    return joined.decode("latin-1")


async def _reject(scope: Scope, send: Send) -> None:
    # The reason is in the log, not in the response: it may quote what a client sent.
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
