"""gunicorn integration for ASGI apps: the uvicorn worker with realip's protocols,
and gunicorn's own ASGI worker with realip's connection answer.

::

    gunicorn -k realip.gunicorn.UvicornWorker --bind 0.0.0.0:8000 app:app
    gunicorn -k realip.gunicorn.ASGIWorker --bind 0.0.0.0:8000 app:app

WSGI workers (sync, gthread, gevent) need nothing here: they put the
connection's socket in ``environ["gunicorn.socket"]``, where
:class:`realip.RealIPWSGIMiddleware` finds it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, ClassVar

try:
    from uvicorn_worker import UvicornWorker as _UvicornWorker
except ImportError as exc:  # uvicorn-worker, or the gunicorn or uvicorn it needs, is not installed
    raise ImportError(
        f"realip.gunicorn needs gunicorn, uvicorn and uvicorn-worker ({exc}): pip install 'realip[gunicorn]'",
        name=exc.name,
    ) from exc

from gunicorn.asgi.protocol import ASGIProtocol as _ASGIProtocol
from gunicorn.workers import gasgi as _gasgi

from .result import Resolution
from .servers._connection import (
    READ_HEADER,
    SERVE,
    ConnectionStart,
    default_resolver,
    proxy_header_read_by_server,
    publish,
)

__all__ = ["ASGIProtocol", "ASGIWorker", "UvicornH11Worker", "UvicornWorker"]


class UvicornWorker(_UvicornWorker):
    """``uvicorn_worker.UvicornWorker`` with ``realip.uvicorn``'s HTTP and WebSocket protocols.

    uvicorn's own proxy-header handling is switched off: it would rewrite the
    client from ``X-Forwarded-For`` for any peer in gunicorn's
    ``forwarded_allow_ips`` (``127.0.0.1,::1`` by default) before realip sees
    the socket peer. realip's middleware reads the headers instead.
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "realip.uvicorn:AutoHTTPProtocol",
        "ws": "realip.uvicorn:AutoWebSocketsProtocol",
        "proxy_headers": False,
    }


class UvicornH11Worker(UvicornWorker):
    """The same with the pure-Python h11 parser and the asyncio loop."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio",
        "http": "realip.uvicorn:H11Protocol",
        "ws": "realip.uvicorn:AutoWebSocketsProtocol",
        "proxy_headers": False,
    }


class ASGIProtocol(_ASGIProtocol):
    """gunicorn's ASGI connection (HTTP/1.1, WebSocket, HTTP/2), plus the connection's answer.

    Once per connection, before gunicorn sees a byte, it asks
    ``ConnectionResolver`` about the socket (TOA) and, when realip's PROXY
    protocol is on (``REALIP_PROXY_PROTOCOL``) and the peer is an allowed load
    balancer, reads the PROXY header itself: a missing, slow or malformed
    header closes the connection, and so does any other peer (unless
    ``REALIP_PROXY_PROTOCOL_OTHERS=serve``). Nothing of a closed connection
    reaches gunicorn or the application.

    When gunicorn reads the PROXY header itself (``--proxy-protocol``), it
    checked ``--proxy-allow-from``; realip believes what it found, reports it
    as ``source="proxy-protocol"`` with the load balancer as the hop, and keeps
    it for every request, WebSocket and HTTP/2 stream of the connection.

    Every scope gets the answer as ``scope["extensions"]["realip.connection"]``
    and as ``scope["client"]``; gunicorn's access log shows the same client.
    """

    #: The connection's answer, once known.
    _realip_answer: Resolution | None = None
    #: While a PROXY header is being read: the connection's start, its transport, its timer.
    _realip_start: ConnectionStart | None = None
    _realip_pending: asyncio.BaseTransport | None = None
    _realip_deadline: asyncio.TimerHandle | None = None
    #: gunicorn's own connection_made() ran: gunicorn serves the connection.
    _realip_served = False
    #: gunicorn reads the PROXY header on this connection: take what it found at the first request.
    _realip_from_gunicorn = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        start = ConnectionStart(
            default_resolver(),
            sock,
            tuple(peer[:2]) if isinstance(peer, (tuple, list)) else None,
            unix=sock is not None and getattr(sock, "family", None) == socket.AF_UNIX,
            tls=transport.get_extra_info("ssl_object") is not None,
        )
        if start.state == SERVE:
            self._realip_serve(transport, start)
        elif start.state == READ_HEADER:
            self._realip_start = start
            self._realip_pending = transport
            self._realip_deadline = self.worker.loop.call_later(start.timeout, self._realip_too_slow)
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        start = self._realip_start
        if start is None:
            if self._realip_served:
                super().data_received(data)
            return
        state = start.feed(data)
        if state == READ_HEADER:
            return
        transport = self._realip_pending
        self._realip_stop_reading_header()
        assert transport is not None
        if state == SERVE:
            self._realip_serve(transport, start)
        else:
            transport.close()

    def _realip_serve(self, transport: asyncio.BaseTransport, start: ConnectionStart) -> None:
        self._realip_answer = start.answer
        self._realip_from_gunicorn = self._proxy_protocol != "off"
        self._realip_served = True
        super().connection_made(transport)
        if start.rest:
            super().data_received(start.rest)

    def _realip_too_slow(self) -> None:
        start, transport = self._realip_start, self._realip_pending
        self._realip_deadline = None
        self._realip_stop_reading_header()
        if start is not None and transport is not None:
            start.too_slow()
            transport.close()

    def _realip_stop_reading_header(self) -> None:
        self._realip_start = None
        self._realip_pending = None
        if self._realip_deadline is not None:
            self._realip_deadline.cancel()
            self._realip_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._realip_stop_reading_header()
        if self._realip_served:
            super().connection_lost(exc)

    def _on_headers_complete(self) -> Any:
        if self._realip_from_gunicorn:
            # gunicorn's parser read the PROXY header (if the peer was allowed to send one) before
            # this first request line; it keeps the address for the first request only.
            self._realip_from_gunicorn = False
            info = getattr(self._callback_parser, "proxy_protocol_info", None)
            if info and self._realip_answer is not None:
                host, port = info.get("client_addr"), info.get("client_port")
                client = (str(host), int(port)) if host is not None and port is not None else None
                self._realip_answer = proxy_header_read_by_server(self._realip_answer, client)
        return super()._on_headers_complete()

    # Every scope and access-log line of the connection, HTTP/1.1, WebSocket and HTTP/2.

    def _build_http_scope(self, request: Any, sockname: Any, peername: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._build_http_scope(request, sockname, peername)
        if self._realip_answer is not None:
            publish(scope, self._realip_answer)
        return scope

    def _build_websocket_scope(self, request: Any, sockname: Any, peername: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._build_websocket_scope(request, sockname, peername)
        if self._realip_answer is not None:
            publish(scope, self._realip_answer)
        return scope

    def _build_http2_scope(self, request: Any, sockname: Any, peername: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._build_http2_scope(request, sockname, peername)
        if self._realip_answer is not None:
            publish(scope, self._realip_answer)
        return scope

    def _build_environ(self, request: Any, sockname: Any, peername: Any) -> dict[str, Any]:
        return self._realip_log_client(super()._build_environ(request, sockname, peername))

    def _build_http2_environ(self, request: Any, sockname: Any, peername: Any) -> dict[str, Any]:
        return self._realip_log_client(super()._build_http2_environ(request, sockname, peername))

    def _realip_log_client(self, environ: dict[str, Any]) -> dict[str, Any]:
        answer = self._realip_answer
        if answer is not None and answer.client is not None:
            environ["REMOTE_ADDR"] = answer.client[0]
        return environ


class ASGIWorker(_gasgi.ASGIWorker):
    """gunicorn's own ASGI worker (``-k asgi``) whose connections get realip's answer.

    ::

        gunicorn -k realip.gunicorn.ASGIWorker --bind 0.0.0.0:8000 app:app

    Settings come from ``REALIP_*`` variables (TOA, PROXY protocol), checked
    when gunicorn starts. gunicorn's ``--proxy-protocol`` and realip's
    ``REALIP_PROXY_PROTOCOL`` cannot both read the header: gunicorn refuses to
    start with both. See :class:`ASGIProtocol` for what each connection trusts.
    """

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        resolver = default_resolver()  # a bad REALIP_* value stops gunicorn here, naming it
        if resolver.proxy_protocol and getattr(cfg, "proxy_protocol", "off") != "off":
            # gunicorn's app runner prints a RuntimeError's message and exits.
            raise RuntimeError(
                "realip: gunicorn's --proxy-protocol and REALIP_PROXY_PROTOCOL would both read the PROXY header: "
                "turn one off (realip reads what gunicorn found, and its own parser has realip's allow-list)"
            )

    def init_process(self) -> None:
        # gunicorn's worker builds its connections from the module global ASGIProtocol
        # (``lambda: ASGIProtocol(self)`` in _serve()); this worker process builds realip's.
        _gasgi.ASGIProtocol = ASGIProtocol
        super().init_process()
