"""Connection-level decisions: what the connection itself says about the client.

Behind a layer-4 load balancer doing NAT64, the socket peer is the load
balancer and the client is kept by the kernel TOA module for this one socket.
:class:`ConnectionResolver` asks it once per connection, believes the answer
only when the peer is a trusted load balancer, and stops asking on a host where
no module is loaded.

It works on whatever the server gives: a ``socket.socket`` (gunicorn,
Werkzeug), asyncio's ``TransportSocket`` or uvloop's ``PseudoSocket``
(uvicorn), or a bare file descriptor (uWSGI).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Final

from ._log import Once, RateLimitedLog, logger
from .address import IPNetwork, TrustedNetworks, ip_text
from .core import BoundedCache, peer_resolution
from .errors import ConfigError
from .proxy_protocol import ProxyHeader, ProxyProtocolReader
from .result import Resolution, Source, make_resolution
from .toa import TOAStatus
from .toa import available as toa_available
from .toa import lookup as toa_lookup
from .toa import unavailable_reason as toa_unavailable_reason

__all__ = ["CONNECTION_GONE", "DEFAULT_TOA_PEERS", "UNIX_PEER", "ConnectionResolver"]

#: The networks shared Huawei Cloud ELB instances connect to backends from
#: (100.125.0.0/16; some regions also 100.126.0.0/16). Both lie in the shared
#: address space of RFC 6598, which is not routed on the internet, so trusting
#: them by default does not let an internet client choose its address. A
#: dedicated ELB connects from the backend subnet: name it in ``toa_peers``.
DEFAULT_TOA_PEERS: Final = ("100.125.0.0/16", "100.126.0.0/16")

#: Seconds a peer has to send its whole PROXY protocol header before the
#: connection is closed (HAProxy's own receivers use a few seconds too).
PROXY_PROTOCOL_TIMEOUT: Final = 5.0

#: After "no TOA module on this host", ask again no sooner than this (seconds):
#: a module loaded later is noticed without a restart, and a host without one
#: pays one system call a minute, not one per connection.
RECHECK_AFTER: Final = 60.0


#: The answer for a connection that was reset before realip could ask about it
#: (the TOA module answers ``ENOTCONN``): the client is gone and cannot read a
#: response, and the only address left is the load balancer's, which must not
#: become the client. Integrations close such a connection without running the app.
CONNECTION_GONE: Final = Resolution(client=None, peer=None, source="gone")

#: Says once per process that the shim is missing (many resolvers may be built).
_SHIM_MISSING: Final = Once()

#: The answer for a peer on a Unix-socket listener (no address).
UNIX_PEER: Final = Resolution(client=None, peer=None, source=Source.UNIX)


class ConnectionResolver:
    """Decides the client of one connection from its socket. One per process.

    ``toa``: ask the TOA module at all. ``toa_peers``: the load balancers whose
    TOA answers are believed (IPs or CIDR networks); the module accepts the
    option from any sender, so an answer on a connection from anyone else is
    ignored and that peer stays the client.

    ``trusted_proxies``: the proxies whose forwarding headers the middleware
    reads. While a TOA module is loaded, a connection from one of them (or
    from a TOA or PROXY protocol peer) is asked once whether the module wrote
    its peer address from a TCP option (``EFAULT``); such an address was not
    seen on the wire, and :class:`~realip.core.Resolver` never trusts it.

    ``proxy_protocol``: every connection from ``proxy_protocol_peers`` must
    start with a PROXY protocol header (v1 or v2), complete within
    ``proxy_protocol_timeout`` seconds; a missing, slow or malformed header
    closes the connection. Connections from other peers are closed
    (``proxy_protocol_others="close"``, the default) or served without a
    header (``"serve"``). Nothing is guessed: on an enabled listener an
    allowed peer must send the header.
    """

    def __init__(
        self,
        *,
        toa: bool = True,
        toa_peers: str | Iterable[str | IPNetwork] = DEFAULT_TOA_PEERS,
        trusted_proxies: str | Iterable[str | IPNetwork] | TrustedNetworks = (),
        recheck_after: float = RECHECK_AFTER,
        proxy_protocol: bool = False,
        proxy_protocol_peers: str | Iterable[str | IPNetwork] = (),
        proxy_protocol_timeout: float = PROXY_PROTOCOL_TIMEOUT,
        proxy_protocol_others: str = "close",
    ) -> None:
        if not isinstance(toa, bool):
            raise ConfigError("toa", toa, "expected True or False")
        self.toa = toa
        self.toa_peers = TrustedNetworks.parse(toa_peers, option="toa_peers")
        trusted = (
            trusted_proxies
            if isinstance(trusted_proxies, TrustedNetworks)
            else TrustedNetworks.parse(trusted_proxies, option="trusted_proxies", allow_everyone=True)
        )
        self.proxy_protocol = bool(proxy_protocol)
        self.proxy_protocol_peers = TrustedNetworks.parse(proxy_protocol_peers, option="proxy_protocol_peers")
        if self.proxy_protocol and not self.proxy_protocol_peers:
            raise ConfigError(
                "proxy_protocol_peers", proxy_protocol_peers, "name the load balancers allowed to send PROXY headers"
            )
        if not (isinstance(proxy_protocol_timeout, (int, float)) and 0 < proxy_protocol_timeout <= 300):
            raise ConfigError("proxy_protocol_timeout", proxy_protocol_timeout, "expected seconds, 0 < t <= 300")
        self.proxy_protocol_timeout = float(proxy_protocol_timeout)
        if proxy_protocol_others not in ("close", "serve"):
            raise ConfigError("proxy_protocol_others", proxy_protocol_others, "expected 'close' or 'serve'")
        self.proxy_protocol_others = proxy_protocol_others
        self.recheck_after = recheck_after
        #: Every peer whose address would be trusted for something: asked about once per connection.
        self._asked = TrustedNetworks(self.toa_peers.networks + trusted.networks + self.proxy_protocol_peers.networks)
        self._module_absent_until = 0.0
        self._is_asked_peer = BoundedCache()
        self._errors = RateLimitedLog()
        self._once = Once()
        if self.toa and not toa_available():
            _SHIM_MISSING(logging.WARNING, "realip: TOA requested but %s", toa_unavailable_reason())

    def __repr__(self) -> str:
        return (
            f"ConnectionResolver(toa={self.toa}, toa_peers={[str(n) for n in self.toa_peers.networks]}, "
            f"proxy_protocol={self.proxy_protocol})"
        )

    def expects_proxy_header(self, base: Resolution) -> bool | None:
        """For a new connection (its :meth:`resolve` answer): ``True`` read a PROXY
        header first, ``False`` serve it as it is, ``None`` close it (a peer not
        allowed to send one, or one whose address the TOA module wrote)."""
        if not self.proxy_protocol:
            return False
        client = base.client
        if client is not None and not base.rewritten_by_kernel and self.proxy_protocol_peers.contains_text(client[0]):
            return True
        return False if self.proxy_protocol_others == "serve" else None

    def proxy_header_reader(self) -> ProxyProtocolReader:
        return ProxyProtocolReader()

    def from_proxy_header(self, header: ProxyHeader, base: Resolution) -> Resolution:
        """The connection's answer from a PROXY header its (allowed) peer sent.

        ``base`` is the connection's own answer (:meth:`resolve`). ``LOCAL``
        (v2, health checks) and ``UNKNOWN`` (v1) mean "the socket's own
        addresses": the load balancer itself is the client.
        """
        client = header.client
        if client is None:
            return Resolution(client=base.client, peer=base.peer, source=base.source, proxy_protocol=header)
        hops = (base.client[0],) if base.client is not None else ()
        return Resolution(
            client=(str(client[0]), client[1]),
            peer=base.peer,
            source=Source.PROXY_PROTOCOL,
            hops=hops,
            proxy_protocol=header,
        )

    @property
    def asks_toa(self) -> bool:
        """Whether a lookup may happen now (false on a host known to have no module)."""
        # No clock while no lookup has said "no module" (the common case on a host with one).
        return self.toa and (self._module_absent_until == 0.0 or time.monotonic() >= self._module_absent_until)

    def wants(self, client: tuple[str, int] | None) -> bool:
        """Whether a connection from this (normalised) peer should be asked about now.

        Cheap enough to call per request: no system call, and the network
        match is cached per address (bounded: at most 4096 addresses).
        """
        if client is None or not self.asks_toa:
            return False
        return self.may_ask(client)

    def may_ask(self, client: tuple[str, int]) -> bool:
        """Whether connections from this (normalised) peer are asked about at all:
        ``toa`` is on and the peer would be trusted (a TOA load balancer, a
        trusted proxy, a PROXY protocol peer). :meth:`wants` adds the clock (a
        host without the module is asked once a minute at most)."""
        if not self.toa:
            return False
        host = client[0]
        found = self._is_asked_peer.get(host)
        if found is None:
            found = self._asked.contains_text(host)
            self._is_asked_peer.put(host, found)
        return found  # type: ignore[no-any-return]

    def resolve(self, sock: object, peer: tuple[str, int] | list[object] | None, *, unix: bool = False) -> Resolution:
        """The connection's answer, starting from the socket peer the server reported.

        ``sock`` is the accepted connection or its file descriptor; ``unix``
        says the listener is a Unix socket (a missing peer on a TCP listener is
        a connection whose peer is gone, never a Unix socket). Never raises.
        Returns :data:`CONNECTION_GONE` for a connection reset before it could
        be asked about.
        """
        if peer is None:
            return UNIX_PEER if unix else peer_resolution(None)
        base = peer_resolution(tuple(peer))  # type: ignore[arg-type]
        if sock is None or base.peer is None or not self.wants(base.client):
            return base
        return self._ask(sock, base)

    def _ask(self, sock: object, base: Resolution) -> Resolution:
        try:
            answer = toa_lookup(sock)  # type: ignore[arg-type]
        except TypeError:  # a server's stand-in that is no socket: nothing to ask
            return base
        status = answer.status
        peer_host = base.client[0]  # type: ignore[index]
        if status is TOAStatus.FOUND:
            assert answer.address is not None and answer.port is not None
            if self.toa_peers.contains_text(peer_host):
                return make_resolution(
                    (ip_text(answer.address), answer.port), base.peer, Source.TOA, (peer_host,), None, answer
                )
            # An option from a peer that is not a TOA load balancer: the peer stays the client.
            return make_resolution(base.client, base.peer, base.source, (), None, answer)
        if status is TOAStatus.NONE:
            if answer.rewritten_by_kernel:
                # The module wrote this peer address from a TCP option (IPv4 TOA, or NAT64
                # on an AF_INET6 listener): nothing on the wire vouched for it.
                return make_resolution(base.client, base.peer, Source.TOA, (), None, answer)
            return make_resolution(base.client, base.peer, base.source, (), None, answer)
        if status is TOAStatus.NO_MODULE:
            self._module_absent_until = time.monotonic() + self.recheck_after
            self._once(
                logging.WARNING,
                "realip: no TOA kernel module on this host (getsockopt answered ENOPROTOOPT); "
                "NAT64 clients will show as the load balancer. Asking again every %.0fs. See `realip doctor`.",
                self.recheck_after,
            )
            return base
        if status is TOAStatus.UNAVAILABLE:
            self._module_absent_until = float("inf")
            return base
        if answer.connection_gone:
            logger.debug("realip: connection from %s reset before its TOA lookup: not served", peer_host)
            return CONNECTION_GONE
        self._errors.warning("unexpected TOA lookup error", f"errno {answer.errno} for peer {peer_host}")
        return base
