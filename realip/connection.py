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

from ._log import Once, RateLimitedLog
from .address import AddressError, IPNetwork, TrustedNetworks, parse_ip
from .core import peer_resolution
from .result import Resolution, Source
from .toa import TOAStatus
from .toa import available as toa_available
from .toa import lookup as toa_lookup

__all__ = ["DEFAULT_TOA_PEERS", "ConnectionResolver"]

#: The networks shared Huawei Cloud ELB instances connect to backends from
#: (100.125.0.0/16; some regions also 100.126.0.0/16). Both lie in the shared
#: address space of RFC 6598, which is not routed on the internet, so trusting
#: them by default does not let an internet client choose its address. A
#: dedicated ELB connects from the backend subnet: name it in ``toa_peers``.
DEFAULT_TOA_PEERS: Final = ("100.125.0.0/16", "100.126.0.0/16")

#: After "no TOA module on this host", ask again no sooner than this (seconds):
#: a module loaded later is noticed without a restart, and a host without one
#: pays one system call a minute, not one per connection.
RECHECK_AFTER: Final = 60.0


class ConnectionResolver:
    """Decides the client of one connection from its socket. One per process.

    ``toa``: ask the TOA module at all. ``toa_peers``: the load balancers whose
    TOA answers are believed (IPs or CIDR networks); the module accepts the
    option from any sender, so an answer on a connection from anyone else is
    ignored and that peer stays the client.
    """

    def __init__(
        self,
        *,
        toa: bool = True,
        toa_peers: str | Iterable[str | IPNetwork] = DEFAULT_TOA_PEERS,
        recheck_after: float = RECHECK_AFTER,
    ) -> None:
        self.toa = bool(toa)
        self.toa_peers = TrustedNetworks.parse(toa_peers, option="toa_peers")
        self.recheck_after = recheck_after
        self._module_absent_until = 0.0
        self._is_toa_peer: dict[str, bool] = {}
        self._errors = RateLimitedLog()
        self._once = Once()
        if self.toa and not toa_available():
            self._once(logging.WARNING, "realip: TOA requested but the compiled shim is not available on this platform")

    def __repr__(self) -> str:
        return f"ConnectionResolver(toa={self.toa}, toa_peers={[str(n) for n in self.toa_peers.networks]})"

    @property
    def asks_toa(self) -> bool:
        """Whether a lookup may happen now (false on a host known to have no module)."""
        return self.toa and time.monotonic() >= self._module_absent_until

    def wants(self, client: tuple[str, int] | None) -> bool:
        """Whether a connection from this (normalised) peer should be asked about.

        Cheap enough to call per request: no system call, and the network
        match is cached per address (bounded: at most 4096 addresses).
        """
        if client is None or not self.asks_toa:
            return False
        host = client[0]
        found = self._is_toa_peer.get(host)
        if found is None:
            try:
                found = parse_ip(host) in self.toa_peers
            except AddressError:
                found = False
            if len(self._is_toa_peer) >= 4096:
                self._is_toa_peer.clear()
            self._is_toa_peer[host] = found
        return found

    def resolve(self, sock: object, peer: tuple[str, int] | list[object] | None) -> Resolution:
        """The connection's answer, starting from the socket peer the server reported.

        ``sock`` is the accepted connection or its file descriptor. Never raises.
        """
        base = peer_resolution(tuple(peer)) if peer is not None else peer_resolution(None)  # type: ignore[arg-type]
        if sock is None or base.peer is None or not self.wants(base.client):
            return base
        # Only an AF_INET socket needs asking: on AF_INET6 the module rewrites
        # getpeername() itself (toa-abi.md), so the server already reports the
        # client. The peer's spelling tells the family without a system call
        # (the socket object's own .family can lie: uvicorn --fd wraps the
        # listener as AF_UNIX).
        if ":" in base.peer[0]:
            return base
        return self._ask(sock, base)

    def _ask(self, sock: object, base: Resolution) -> Resolution:
        answer = toa_lookup(sock)  # type: ignore[arg-type]
        status = answer.status
        if status is TOAStatus.FOUND:
            assert answer.address is not None and answer.port is not None
            return Resolution(
                client=(str(answer.address), answer.port),
                peer=base.peer,
                source=Source.TOA,
                hops=(base.client[0],),  # type: ignore[index]
                toa=answer,
            )
        if status is TOAStatus.NONE:
            return base
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
        self._errors.warning("unexpected TOA lookup error", f"errno {answer.errno} for peer {base.client[0]}")  # type: ignore[index]
        return base
