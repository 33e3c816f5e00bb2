"""Hypercorn integration: connection-level answers (TOA, PROXY protocol) for every stream.

Hypercorn has no hook for a new connection; its connections are served by a
``TCPServer`` class (one for asyncio and uvloop, one for trio), which realip
replaces with a subclass. Start Hypercorn through realip, with Hypercorn's own
options::

    python -m realip.hypercorn app:app --bind '[::]:8000'
    python -m realip.hypercorn app:app --bind '[::]:8000' --worker-class trio
    python -m realip.hypercorn app:app --bind '[::]:443' --certfile cert.pem --keyfile key.pem

or, from code, :func:`serve` instead of ``hypercorn.asyncio.serve`` (for trio:
call :func:`install` before ``hypercorn.trio.serve``).

Per connection, before Hypercorn reads a byte: one TOA lookup, and when
``REALIP_PROXY_PROTOCOL`` is on, the PROXY header from an allowed load balancer
(others are closed, as are missing, slow or malformed headers: nothing of such
a connection reaches the application). Every HTTP/1.1 request, WebSocket and
HTTP/2 stream of the connection (h2c or TLS with ALPN) then gets the answer as
``scope["extensions"]["realip.connection"]`` and ``scope["client"]``, which
Hypercorn's access log shows. A TLS listener starts with the TLS handshake, so
no PROXY header can come first there: a connection that owes one is closed
(terminate TLS at the load balancer, or serve it on ``--insecure-bind``).
Settings come from ``REALIP_*`` variables (:mod:`realip.config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import hypercorn.asyncio.run as _asyncio_run
    from hypercorn.asyncio.tcp_server import TCPServer as _AsyncioTCPServer
    from hypercorn.events import RawData
    from hypercorn.utils import parse_socket_addr
except ImportError as exc:
    raise ImportError(f"realip.hypercorn needs Hypercorn ({exc}): pip install hypercorn", name=exc.name) from exc

from .errors import ConfigError
from .result import Resolution
from .servers._connection import READ_HEADER, SERVE, ConnectionStart, default_resolver, publish

__all__ = ["install", "main", "serve"]

#: Bytes read at a time while the PROXY header is read (Hypercorn reads 64 KiB too).
MAX_RECV = 2**16


class _ConnectionApp:
    """Hypercorn's application wrapper, for one connection: publishes the connection's answer."""

    __slots__ = ("answer", "app")

    def __init__(self, app: Any, answer: Resolution) -> None:
        self.app = app
        self.answer = answer

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any, sync_spawn: Any, call_soon: Any) -> Any:
        publish(scope, self.answer)  # the scope Hypercorn's access log reads after the response
        return self.app(scope, receive, send, sync_spawn, call_soon)


def _start(sock: Any, *, tls: bool) -> ConnectionStart:
    """The connection's start, from the accepted socket (asyncio's or trio's)."""
    family = getattr(sock, "family", None)
    try:
        peer = parse_socket_addr(family, sock.getpeername()) if sock is not None else None
    except OSError:  # reset already: Hypercorn gives up on it too
        peer = None
    return ConnectionStart(default_resolver(), sock, peer, unix=family == socket.AF_UNIX, tls=tls)


class TCPServer(_AsyncioTCPServer):
    """Hypercorn's asyncio connection (asyncio and uvloop workers), plus the connection's answer.

    Trusts what :class:`~realip.connection.ConnectionResolver` trusts: the
    socket peer, TOA answers from ``toa_peers``, a PROXY header from
    ``proxy_protocol_peers`` as the connection's first bytes (before TLS only).
    """

    app: Any
    _realip_rest = b""

    async def run(self) -> None:
        start = _start(self.writer.get_extra_info("socket"), tls=self.writer.get_extra_info("ssl_object") is not None)
        if start.state == READ_HEADER:
            try:
                await asyncio.wait_for(self._realip_read_header(start), start.timeout)
            except asyncio.TimeoutError:
                start.too_slow()
        if start.state != SERVE or start.answer is None:
            await self._close()
            return
        self.app = _ConnectionApp(self.app, start.answer)
        self._realip_rest = start.rest
        await super().run()

    async def _realip_read_header(self, start: ConnectionStart) -> None:
        while start.state == READ_HEADER:
            try:
                data = await self.reader.read(MAX_RECV)
            except OSError:  # ConnectionError included
                data = b""
            if not data:
                start.ended()
                return
            start.feed(data)

    async def _read_data(self) -> None:
        rest, self._realip_rest = self._realip_rest, b""
        if rest:  # what came after the PROXY header: the start of the HTTP stream
            await self.protocol.handle(RawData(rest))
        await super()._read_data()


try:
    import hypercorn.trio.run as _trio_run
    import trio
    from hypercorn.trio.tcp_server import TCPServer as _TrioTCPServer
except ImportError:  # trio is optional in Hypercorn
    _trio_run = None
    TrioTCPServer: type | None = None
else:

    class TrioTCPServer(_TrioTCPServer):  # type: ignore[no-redef]
        """Hypercorn's trio connection (``--worker-class trio``), plus the connection's answer.

        Trusts what :class:`TCPServer` trusts.
        """

        app: Any
        _realip_rest = b""

        async def run(self) -> None:
            stream: Any = self.stream
            tls = isinstance(stream, trio.SSLStream)
            raw = stream.transport_stream if tls else stream
            start = _start(getattr(raw, "socket", None), tls=tls)
            if start.state == READ_HEADER:
                with trio.move_on_after(start.timeout):
                    await self._realip_read_header(start)
                start.too_slow()  # (nothing to do unless the header is still incomplete)
            if start.state != SERVE or start.answer is None:
                await trio.aclose_forcefully(stream)
                return
            self.app = _ConnectionApp(self.app, start.answer)
            self._realip_rest = start.rest
            await super().run()

        async def _realip_read_header(self, start: ConnectionStart) -> None:
            while start.state == READ_HEADER:
                try:
                    data = await self.stream.receive_some(MAX_RECV)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    start.ended()
                    return
                start.feed(bytes(data))

        async def _read_data(self) -> None:
            rest, self._realip_rest = self._realip_rest, b""
            if rest:
                await self.protocol.handle(RawData(rest))
            await super()._read_data()


#: Hypercorn's worker functions, kept before :func:`install` replaced them.
_original: dict[str, Callable[..., Any]] = {}


def _replace(module: Any, name: str, replacement: Callable[..., Any]) -> None:
    current = getattr(module, name)
    if current is not replacement:
        _original.setdefault(name, current)
        setattr(module, name, replacement)


def _asyncio_worker(config: Any, sockets: Any = None, shutdown_event: Any = None) -> None:
    install()  # in a worker process that Hypercorn spawned: a fresh interpreter
    _original["asyncio_worker"](config, sockets, shutdown_event)


def _uvloop_worker(config: Any, sockets: Any = None, shutdown_event: Any = None) -> None:
    install()
    _original["uvloop_worker"](config, sockets, shutdown_event)


def _trio_worker(config: Any, sockets: Any = None, shutdown_event: Any = None) -> None:
    install()
    _original["trio_worker"](config, sockets, shutdown_event)


def install() -> None:
    """Make Hypercorn serve connections with realip's ``TCPServer`` classes.

    In this process, and in the worker processes Hypercorn starts (its
    worker functions are replaced by ones that do the same first). Call it
    before ``hypercorn.asyncio.serve`` / ``hypercorn.trio.serve``; calling it
    again changes nothing.
    """
    _asyncio_run.TCPServer = TCPServer
    _replace(_asyncio_run, "asyncio_worker", _asyncio_worker)
    _replace(_asyncio_run, "uvloop_worker", _uvloop_worker)
    if _trio_run is not None:
        _trio_run.TCPServer = TrioTCPServer
        _replace(_trio_run, "trio_worker", _trio_worker)


async def serve(
    app: Any,
    config: Any,
    *,
    shutdown_trigger: Callable[..., Awaitable[Any]] | None = None,
    mode: str | None = None,
) -> None:
    """``hypercorn.asyncio.serve(app, config)`` with realip's connections::

        asyncio.run(realip.hypercorn.serve(app, config))

    The ``REALIP_*`` settings are checked here, before anything is served.
    """
    from hypercorn.asyncio import serve as hypercorn_serve

    default_resolver()
    install()
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, mode=mode)


def main(argv: list[str] | None = None) -> int:
    """``python -m realip.hypercorn``: Hypercorn's command line, with realip's connections."""
    try:
        default_resolver()  # a bad REALIP_* value stops here, naming it
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    install()
    from hypercorn.__main__ import main as hypercorn_main

    return int(hypercorn_main(argv))


if __name__ == "__main__":
    # Run the copy of this module imported under its own name, so that the worker
    # functions Hypercorn hands to its worker processes are found there by name.
    from realip.hypercorn import main as _main

    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(_main())
