"""The start of one connection, without I/O: its answer, and the PROXY header when one is due.

Every server integration does the same per connection, whatever its I/O
(asyncio protocols, streams, Twisted): ask :class:`~realip.connection.ConnectionResolver`
about the socket once, read a PROXY header first when the peer is an allowed
load balancer, close the connection when the rules say so, and hand the
answer to every request and stream of the connection. :class:`ConnectionStart`
is that sequence as a small state machine; the integration feeds it bytes and
arms the timer.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final

from .._log import RateLimitedLog
from ..config import connection_options_from_env
from ..connection import CONNECTION_GONE, ConnectionResolver, proxy_header_read_by_server
from ..metrics import METRICS
from ..proxy_protocol import ProxyProtocolError, ProxyProtocolReader
from ..result import Resolution

__all__ = [
    "CLOSE",
    "READ_HEADER",
    "SERVE",
    "ConnectionStart",
    "default_resolver",
    "proxy_header_read_by_server",
    "publish",
]

#: Serve the connection with :attr:`ConnectionStart.answer`.
SERVE: Final = "serve"
#: Read a PROXY header first: feed every byte to :meth:`ConnectionStart.feed`.
READ_HEADER: Final = "read-header"
#: Close the connection; nothing of it may reach the application.
CLOSE: Final = "close"

_errors: Final = RateLimitedLog()
_default: ConnectionResolver | None = None


def default_resolver() -> ConnectionResolver:
    """The process's resolver, built on first use from ``REALIP_*`` variables
    (in the worker process: after a fork, not before)."""
    global _default
    if _default is None:
        _default = ConnectionResolver(**connection_options_from_env())
    return _default


class ConnectionStart:
    """What to do with one new connection, and the answer its requests get.

    It trusts what :class:`~realip.connection.ConnectionResolver` trusts: the
    socket peer the server reported; the TOA module's answer only on a
    connection from ``toa_peers``; a PROXY header only from
    ``proxy_protocol_peers``, only as the very first bytes of the
    connection, and never on a TLS listener (``tls=True``: the server does
    the TLS handshake first, so the header cannot come first; none is read,
    and a connection that owes one is closed).

    :attr:`state` is :data:`SERVE` (use :attr:`answer`), :data:`READ_HEADER`
    (feed the connection's bytes to :meth:`feed` until it says otherwise,
    within :attr:`timeout` seconds, then call :meth:`too_slow`) or
    :data:`CLOSE`. Every reason to close is logged here (rate-limited), with
    the same words under every server.
    """

    __slots__ = ("_base", "_reader", "_resolver", "answer", "rest", "state")

    def __init__(
        self,
        resolver: ConnectionResolver,
        sock: object,
        peer: tuple[str, int] | list[object] | None,
        *,
        unix: bool = False,
        tls: bool = False,
    ) -> None:
        self._resolver = resolver
        self._reader: ProxyProtocolReader | None = None
        #: The connection's answer once :attr:`state` is :data:`SERVE`.
        self.answer: Resolution | None = None
        #: Bytes that followed the PROXY header: the start of the HTTP stream.
        self.rest = b""
        self.state: str = SERVE
        base = self._base = resolver.resolve(sock, peer, unix=unix)
        if base is CONNECTION_GONE:
            # Reset before it could be asked about (resolve() logged it at debug level): the
            # client cannot read an answer, and the load balancer must not stand in for it.
            self.state = CLOSE
            return
        expects = resolver.expects_proxy_header(base)
        if expects is None:
            self._close("peer may not send a PROXY header", metric="peer-not-allowed")
        elif expects and tls:
            self._close(
                "a PROXY header is due, but this is a TLS listener (terminate TLS at the load balancer)",
                metric="peer-not-allowed",
            )
        elif expects:
            self.state = READ_HEADER
            self._reader = resolver.proxy_header_reader()
        else:
            self.answer = base

    @property
    def timeout(self) -> float:
        """Seconds the peer has for its whole PROXY header."""
        return self._resolver.proxy_protocol_timeout

    def feed(self, data: bytes) -> str:
        """The next bytes of a connection in :data:`READ_HEADER`; returns the new state.

        :data:`SERVE`: the header is read, :attr:`answer` is set and
        :attr:`rest` holds what came after it. :data:`CLOSE`: the bytes
        cannot begin a valid header. :data:`READ_HEADER`: more are needed.
        """
        reader = self._reader
        if reader is None:
            raise RuntimeError(f"no PROXY header is being read (state {self.state!r})")
        try:
            header = reader.feed(data)
        except ProxyProtocolError as exc:
            self._close("malformed PROXY header", str(exc), metric="malformed")
            return CLOSE
        if header is None:
            return READ_HEADER
        self._reader = None
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.proxy_accepted()
        self.answer = self._resolver.from_proxy_header(header, self._base)
        self.rest = reader.rest
        self.state = SERVE
        return SERVE

    def too_slow(self) -> None:
        """The timer ran out: close a connection whose header is not complete."""
        if self.state == READ_HEADER:
            self._close("PROXY header not complete in time", metric="timeout")

    def ended(self) -> None:
        """The peer went away before its header was complete: nothing to log."""
        self._reader = None
        self.state = CLOSE

    def _close(self, reason: str, detail: str | None = None, *, metric: str) -> None:
        """Close, log why (rate-limited) and count it (``metric``: one of ``realip.metrics.PROXY_REFUSALS``)."""
        self._reader = None
        self.state = CLOSE
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.proxy_refused(metric)
        if detail is None:
            client = self._base.client
            detail = client[0] if client is not None else str(self._base.peer)
        _errors.warning(f"connection closed: {reason}", detail)


def publish(scope: MutableMapping[str, Any], answer: Resolution) -> None:
    """Hand the connection's answer to one request or stream.

    :class:`realip.RealIPMiddleware` reads ``scope["extensions"]["realip.connection"]``
    as its starting point; ``scope["client"]`` is what the server's access log
    and any middleware before realip's see.
    """
    extensions = scope.get("extensions")
    if extensions is None:
        scope["extensions"] = {"realip.connection": answer}
    else:
        extensions["realip.connection"] = answer
    if answer.client is not None:
        scope["client"] = answer.client
