"""uvicorn integration: connection-level answers (TOA) before any request.

ASGI exposes no socket, so the TOA lookup has to happen in the server, once
per connection, in the protocol's ``connection_made()``. These protocol classes
are uvicorn's own with that one addition; select them on the command line::

    uvicorn app:app --http realip.uvicorn:HttpToolsProtocol --ws realip.uvicorn:WebSocketsSansIOProtocol

or in code (``uvicorn.run(app, http=realip.uvicorn.H11Protocol, ws=...)``), or
with gunicorn: ``gunicorn -k realip.gunicorn.UvicornWorker app:app``.

For each connection the protocol sets uvicorn's ``client`` (so every scope and
the access log carry the answer) and publishes the connection's
:class:`~realip.Resolution` as ``scope["extensions"]["realip.connection"]``,
where :class:`realip.RealIPMiddleware` picks it up as the starting point for
forwarding headers. A WebSocket upgrade hands the connection to a separate
protocol object; the ``ws`` classes here take over the HTTP protocol's answer,
so the lookup still happens once.

Settings come from ``REALIP_TOA`` and ``REALIP_TOA_PEERS`` (see
:mod:`realip.config`), or from :func:`protocols` in code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Iterable
from typing import Any, ClassVar

try:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware as _ProxyHeadersMiddleware
    from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol
except ImportError as exc:
    raise ImportError(f"realip.uvicorn needs uvicorn ({exc}): pip install 'realip[uvicorn]'", name=exc.name) from exc

from ._context import BINDING
from ._log import Once
from .address import IPNetwork
from .asgi import REQUEST_SCOPES, RealIPMiddleware, reject
from .connection import DEFAULT_TOA_PEERS, ConnectionResolver
from .errors import ConfigError
from .memory import PeerFacts
from .result import CONNECTION_GONE, Resolution
from .servers._connection import CLOSE, READ_HEADER, ConnectionStart, default_resolver, publish

__all__ = [  # noqa: F822 - the WebSocket classes are built on first access (module __getattr__)
    "AutoHTTPProtocol",
    "AutoWebSocketsProtocol",
    "H11Protocol",
    "HttpToolsProtocol",
    "WSProtocol",
    "WebSocketProtocol",
    "WebSocketsSansIOProtocol",
    "protocols",
]

_once = Once()


class ConnectionApp:
    """Wraps the app for one connection: publishes the connection's answer.

    When the server's app is :class:`realip.RealIPMiddleware` itself (``uvicorn
    app:app`` with ``app = RealIPMiddleware(...)``, the middleware outermost), its decision
    runs here, once per request, with the connection's facts decided once per
    connection: the app behind it is called directly, without the middleware's
    coroutine in between. Everything else (another app, the log context bound,
    ``lifespan``) goes through the app as usual.
    """

    __slots__ = ("app", "facts", "middleware", "resolution")

    def __init__(self, app: Any, resolution: Resolution) -> None:
        self.app = app
        self.resolution = resolution
        self.middleware = app if type(app) is RealIPMiddleware else None
        self.facts = self.middleware.connection_facts(resolution) if self.middleware is not None else None

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # A plain function returning the app's coroutine, which the protocol awaits
        # (``await app(scope, receive, send)`` in uvicorn's run_asgi): no coroutine of
        # its own per request. Only uvicorn's protocols ever call it.
        middleware = self.middleware
        if middleware is not None and scope["type"] in REQUEST_SCOPES and not BINDING.on:
            facts: PeerFacts = self.facts  # type: ignore[assignment]
            resolution = middleware.resolve_scope(scope, facts, facts.current[1])
            scope["extensions"]["realip.connection"] = self.resolution
            if resolution is None:
                return reject(scope, send)
            return middleware.app(scope, receive, send)
        publish(scope, self.resolution)
        return self.app(scope, receive, send)  # type: ignore[no-any-return]


class _ConnectionMixin:
    """Shared by the HTTP and WebSocket protocol classes below."""

    realip: ClassVar[ConnectionResolver | None] = None
    client: tuple[str, int] | None
    app: Any

    @classmethod
    def _realip_resolver(cls) -> ConnectionResolver:
        resolver = cls.realip
        if resolver is None:
            resolver = default_resolver()  # built in the worker process, from REALIP_* variables
        return resolver

    def _realip_resolve(self, transport: asyncio.BaseTransport) -> Resolution:
        """The connection's own answer (socket peer, TOA). A missing peer is a Unix-socket
        peer only when the listener has no TCP address (uvicorn's ``server`` is ``None``)."""
        unix = getattr(self, "server", None) is None
        return self._realip_resolver().resolve(transport.get_extra_info("socket"), self.client, unix=unix)

    def _realip_apply(self, transport: asyncio.BaseTransport, resolution: Resolution) -> None:
        app = self.app
        if type(app) is _ProxyHeadersMiddleware:
            app = self.app = app.app
            _once(
                logging.WARNING,
                "realip: uvicorn's proxy headers are off on realip's connections (they trust 127.0.0.1,::1 by "
                "default and run before realip); realip's trusted_proxies decide. Start uvicorn with "
                "--no-proxy-headers to silence this.",
            )
        if resolution.client is not None:
            self.client = resolution.client
        # Its bound __call__: uvicorn calls self.app once per request, and a bound method
        # is cheaper to call than an instance (no __call__ lookup on the type).
        self.app = ConnectionApp(app, resolution).__call__
        self._realip_resolution = resolution


class _HTTPMixin(_ConnectionMixin):
    #: The connection's start while its PROXY header is being read (realip.servers).
    _realip_start: ConnectionStart | None = None
    _realip_deadline: asyncio.TimerHandle | None = None
    #: The ``data_received`` that ``super()`` finds from here, looked up once per class:
    #: it is called for every read of every connection, and ``super()`` costs a lookup.
    _realip_next_data_received: ClassVar[Any] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self._realip_resolver().proxy_protocol_peers:
            # No PROXY header is ever read on this server: the parser gets every read
            # itself, without this class's data_received in between.
            self.data_received = self._realip_next_data_received  # type: ignore[method-assign]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        for base in mro[mro.index(_HTTPMixin) + 1 :]:
            if "data_received" in base.__dict__:
                cls._realip_next_data_received = base.__dict__["data_received"]
                break

    #: The WebSocket protocol class uvicorn was configured with (``--ws``), made realip's.
    _realip_ws_class: type[asyncio.Protocol] | None = None

    @property
    def ws_protocol_class(self) -> Any:
        """What uvicorn calls to make the WebSocket protocol of an upgraded connection.

        The configured class (``--ws``), with realip's connection answer added
        when it is not realip's own, called with this connection's answer: the
        WebSocket takes it over (one lookup per connection, nothing kept
        anywhere else). Read by uvicorn only on requests that ask to upgrade.
        """
        ws_class = self._realip_ws_class
        if ws_class is None:
            return None
        return functools.partial(_websocket, ws_class, getattr(self, "_realip_resolution", None))

    @ws_protocol_class.setter
    def ws_protocol_class(self, value: type[asyncio.Protocol] | None) -> None:
        self._realip_ws_class = _with_connection_answer(value)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        _nodelay(transport)
        start = ConnectionStart(
            self._realip_resolver(),
            transport.get_extra_info("socket"),
            self.client,
            unix=getattr(self, "server", None) is None,
        )
        if start.state == CLOSE:  # reset before it could be asked about, or a peer refused: nothing runs
            transport.close()
        elif start.state == READ_HEADER:  # hold everything back from the HTTP parser until the header is read
            self._realip_start = start
            loop = asyncio.get_running_loop()
            self._realip_deadline = loop.call_later(start.timeout, self._realip_too_slow, transport)
        else:
            self._realip_apply(transport, start.answer)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        start = self._realip_start
        if start is None:
            self._realip_next_data_received(data)
            return
        state = start.feed(data)
        if state == READ_HEADER:
            return  # need more: the deadline is still running
        self._realip_start = None
        self._realip_cancel_deadline()
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if state == CLOSE:  # nothing of this connection reaches the application
            transport.close()
            return
        self._realip_apply(transport, start.answer)  # type: ignore[arg-type]
        if start.rest:
            super().data_received(start.rest)  # type: ignore[misc]

    def _realip_too_slow(self, transport: asyncio.BaseTransport) -> None:
        start = self._realip_start
        if start is not None:
            start.too_slow()
            self._realip_start = None
            transport.close()

    def _realip_cancel_deadline(self) -> None:
        if self._realip_deadline is not None:
            self._realip_deadline.cancel()
            self._realip_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._realip_cancel_deadline()
        super().connection_lost(exc)  # type: ignore[misc]


class _WebSocketMixin(_ConnectionMixin):
    #: The answer of the HTTP connection this WebSocket was upgraded from.
    _realip_inherited: Resolution | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        resolution = self._realip_inherited
        if resolution is None:  # not upgraded from realip's HTTP protocol: ask for itself
            resolution = self._realip_resolve(transport)
            if resolution is CONNECTION_GONE:
                transport.close()
                return
        self._realip_apply(transport, resolution)


def _websocket(ws_class: type[asyncio.Protocol], resolution: Resolution | None, **kwargs: Any) -> asyncio.Protocol:
    """Make the WebSocket protocol of an upgraded connection, with the connection's answer."""
    protocol = ws_class(**kwargs)
    protocol._realip_inherited = resolution  # type: ignore[attr-defined]
    return protocol


_with_answer: dict[type, type] = {}


def _with_connection_answer(ws_class: type[asyncio.Protocol] | None) -> type[asyncio.Protocol] | None:
    """``ws_class`` if it is realip's, else the same class with realip's connection answer.

    With realip's HTTP protocol and uvicorn's own ``--ws`` (the default
    ``auto``), a WebSocket would otherwise get the load balancer's address
    instead of the TOA or PROXY protocol client. Cached per class.
    """
    if ws_class is None or issubclass(ws_class, _WebSocketMixin):
        return ws_class
    found = _with_answer.get(ws_class)
    if found is None:
        doc = f"{ws_class.__name__}, plus realip's connection answer."
        found = type(ws_class.__name__, (_WebSocketMixin, ws_class), {"__module__": __name__, "__doc__": doc})
        _with_answer[ws_class] = found
    return found


def _nodelay(transport: asyncio.BaseTransport) -> None:
    """Set TCP_NODELAY where asyncio did not.

    ``uvicorn --fd N`` wraps the inherited listener as ``AF_UNIX`` whatever it
    is, so asyncio skips TCP_NODELAY on its connections and every response
    waits for Nagle and delayed ACKs (about 40 ms: see docs/performance.md).
    ``--fd`` is how a single uvicorn process gets a dual-stack listener, so
    realip's protocols put the option back. On a real Unix socket it fails
    harmlessly.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class H11Protocol(_HTTPMixin, _H11Protocol):
    """uvicorn's h11 HTTP protocol, plus the connection-level answer."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn
    _HttpToolsProtocol = None  # type: ignore[assignment,misc]

if _HttpToolsProtocol is not None:

    class HttpToolsProtocol(_HTTPMixin, _HttpToolsProtocol):
        """uvicorn's httptools HTTP protocol, plus the connection-level answer."""

    AutoHTTPProtocol: type[asyncio.Protocol] = HttpToolsProtocol
else:  # pragma: no cover - httptools is in the test dependencies
    AutoHTTPProtocol = H11Protocol


_WS_BASES = {
    "WebSocketsSansIOProtocol": "uvicorn.protocols.websockets.websockets_sansio_impl",
    "WSProtocol": "uvicorn.protocols.websockets.wsproto_impl",
    # Deprecated in uvicorn (importing it warns), so built only when asked for.
    "WebSocketProtocol": "uvicorn.protocols.websockets.websockets_impl",
}
_ws_classes: dict[str, type[asyncio.Protocol] | None] = {}


def _ws_class(name: str) -> type[asyncio.Protocol] | None:
    """uvicorn's WebSocket protocol ``name`` plus the connection-level answer, or
    ``None`` when its library (websockets, wsproto) is not installed."""
    if name not in _ws_classes:
        import importlib

        try:
            base = getattr(importlib.import_module(_WS_BASES[name]), name)
        except ImportError:
            _ws_classes[name] = None
        else:
            doc = f"uvicorn's {name}, plus the connection-level answer."
            _ws_classes[name] = type(name, (_WebSocketMixin, base), {"__module__": __name__, "__doc__": doc})
    return _ws_classes[name]


def _auto_ws_class() -> type[asyncio.Protocol] | None:
    # What uvicorn's "--ws auto" picks: websockets (sans-I/O) if installed, else wsproto.
    return _ws_class("WebSocketsSansIOProtocol") or _ws_class("WSProtocol")


def __getattr__(name: str) -> object:
    # The WebSocket classes are built on first use, so that importing this module
    # does not import every WebSocket library uvicorn supports.
    if name in _WS_BASES:
        return _ws_class(name)
    if name == "AutoWebSocketsProtocol":
        return _auto_ws_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def protocols(
    *,
    http: str = "auto",
    toa: bool = True,
    toa_peers: str | Iterable[str | IPNetwork] = DEFAULT_TOA_PEERS,
    **proxy_protocol: Any,
) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol] | None]:
    """``(http_class, ws_class)`` with their own settings, for ``uvicorn.run()``::

        http, ws = realip.uvicorn.protocols(toa_peers=["10.0.0.0/24"])
        uvicorn.run(app, http=http, ws=ws)

        http, ws = realip.uvicorn.protocols(proxy_protocol=True, proxy_protocol_peers=["10.0.0.5"])

    ``proxy_protocol*`` options are those of
    :class:`~realip.connection.ConnectionResolver`. The configuration is
    validated here, at start-up.
    """
    resolver = ConnectionResolver(toa=toa, toa_peers=toa_peers, **proxy_protocol)
    bases = {"auto": AutoHTTPProtocol, "h11": H11Protocol, "httptools": AutoHTTPProtocol}
    if http not in bases:
        raise ConfigError("http", http, "expected 'auto', 'h11' or 'httptools'")
    http_class = type(bases[http].__name__, (bases[http],), {"realip": resolver, "__module__": __name__})
    ws_base = _auto_ws_class()
    ws_class = (
        None if ws_base is None else type(ws_base.__name__, (ws_base,), {"realip": resolver, "__module__": __name__})
    )
    return http_class, ws_class
