"""daphne integration: connection-level answers (TOA, PROXY protocol) for HTTP and WebSocket.

Start daphne through realip, with daphne's own options::

    python -m realip.daphne app.asgi:application -b 0.0.0.0 -p 8000
    python -m realip.daphne app.asgi:application --fd 3

or use :class:`Server` wherever daphne's ``Server`` is built
(``CommandLineInterface.server_class``; :class:`CommandLineInterface` is daphne's
with it). Do not combine it with daphne's ``haproxy:`` endpoints, which take a
PROXY header from any peer: realip reads the header, from allowed peers only.

Every connection gets a wrapper between the listener and daphne's HTTP
channel: one TOA lookup, and when ``REALIP_PROXY_PROTOCOL`` is on, the PROXY
header from an allowed load balancer before daphne sees a byte (others are
closed, as are missing, slow or malformed headers). daphne then reads the
answer as the connection's peer, so its scopes and its access log show the
client, and realip publishes it as ``scope["extensions"]["realip.connection"]``
for every request and WebSocket of the connection. On ``ssl:`` endpoints TLS
comes first, so no PROXY header can: a connection that owes one is closed.
Settings come from ``REALIP_*`` variables (:mod:`realip.config`).
"""

from __future__ import annotations

import sys
from typing import Any

try:
    # daphne.server first: it installs Twisted's asyncio reactor, which must come before
    # anything imports twisted.internet.reactor.
    import daphne.server as _daphne_server
    from daphne.cli import CommandLineInterface as _CommandLineInterface
    from twisted.internet import reactor
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
    from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocolNegotiationFactory, ISSLTransport
    from twisted.internet.protocol import Protocol
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
    from zope.interface import directlyProvides, implementer, providedBy
except ImportError as exc:
    raise ImportError(f"realip.daphne needs daphne ({exc}): pip install daphne", name=exc.name) from exc

from .errors import ConfigError
from .result import Resolution
from .servers._connection import READ_HEADER, SERVE, ConnectionStart, default_resolver, publish

__all__ = ["CommandLineInterface", "Server", "main"]


class _ConnectionProtocol(ProtocolWrapper):
    """Stands between one accepted connection and daphne's HTTP channel.

    Trusts what :class:`~realip.connection.ConnectionResolver` trusts: the
    socket peer, TOA answers from ``toa_peers``, a PROXY header from
    ``proxy_protocol_peers`` as the connection's first bytes (before TLS
    only). daphne's channel is connected only once the answer is known, and
    never for a connection that is closed.
    """

    #: daphne's HTTP channel, or the WebSocket protocol daphne hands the connection to.
    wrappedProtocol: Any
    #: The connection's answer, once known; daphne's WebSocket keeps this wrapper as its transport.
    realip_answer: Resolution | None = None
    _start: ConnectionStart | None = None
    _deadline: IDelayedCall | None = None
    #: daphne's channel has been connected (and gets the connection's bytes).
    _connected = False

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        peer = transport.getPeer()
        start = ConnectionStart(
            default_resolver(),
            getattr(transport, "socket", None),  # through TLS too: wrappers pass attributes on
            (peer.host, peer.port) if isinstance(peer, (IPv4Address, IPv6Address)) else None,
            unix=isinstance(peer, UNIXAddress),
            tls=ISSLTransport.providedBy(transport),
        )
        if start.state == SERVE:
            self._serve(start)
        elif start.state == READ_HEADER:
            self._start = start
            self._deadline = reactor.callLater(start.timeout, self._too_slow)
        else:
            transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        start = self._start
        if start is None:
            if self._connected:
                self.wrappedProtocol.dataReceived(data)
            return
        state = start.feed(data)
        if state == READ_HEADER:
            return
        self._stop_reading_header()
        if state == SERVE:
            self._serve(start)
        else:
            self.transport.loseConnection()

    def _serve(self, start: ConnectionStart) -> None:
        self.realip_answer = start.answer
        self._connected = True
        self.wrappedProtocol.makeConnection(self)
        if start.rest:
            self.wrappedProtocol.dataReceived(start.rest)

    def _too_slow(self) -> None:
        start = self._start
        self._deadline = None
        self._stop_reading_header()
        if start is not None:
            start.too_slow()
            self.transport.loseConnection()

    def _stop_reading_header(self) -> None:
        self._start = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def getPeer(self) -> IAddress:
        """The connection's client, as daphne's scopes and access log show it."""
        answer = self.realip_answer
        if answer is None or answer.client is None:
            return self.transport.getPeer()
        host, port = answer.client
        return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)

    def connectionLost(self, reason: Any) -> None:
        self._stop_reading_header()
        if self._connected:
            super().connectionLost(reason)
            return
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol = None


@implementer(IProtocolNegotiationFactory)
class _ConnectionFactory(WrappingFactory):
    """daphne's HTTP factory, each of whose connections is wrapped in a :class:`_ConnectionProtocol`."""

    protocol = _ConnectionProtocol

    def acceptableProtocols(self) -> list[bytes]:
        # What daphne offers over TLS (ALPN), unchanged.
        return list(self.wrappedFactory.acceptableProtocols())


def _answer_of(protocol: Any) -> Resolution | None:
    """The connection's answer for one of daphne's request or WebSocket protocols."""
    candidates = [getattr(protocol, "transport", None), getattr(getattr(protocol, "channel", None), "transport", None)]
    for candidate in candidates:
        if isinstance(candidate, _ConnectionProtocol):
            return candidate.realip_answer
    return None


class Server(_daphne_server.Server):
    """daphne's ``Server`` whose connections get realip's answer (see the module's documentation)."""

    _realip_http_factory: Any = None

    @property
    def http_factory(self) -> Any:
        return self._realip_http_factory

    @http_factory.setter
    def http_factory(self, factory: Any) -> None:
        # daphne's run() builds its HTTP factory and listens with it on every endpoint.
        self._realip_http_factory = _ConnectionFactory(factory)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        answer = _answer_of(protocol)
        if answer is not None:
            publish(scope, answer)
        return super().create_application(protocol, scope)


class CommandLineInterface(_CommandLineInterface):
    """daphne's command line, serving with :class:`Server`."""

    server_class = Server


def main(argv: list[str] | None = None) -> int:
    """``python -m realip.daphne``: daphne's command line, with realip's connections."""
    try:
        default_resolver()  # a bad REALIP_* value stops here, naming it
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    from realip.daphne import main as _main

    sys.exit(_main())
