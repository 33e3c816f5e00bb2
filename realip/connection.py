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
import socket
import time
from collections.abc import Iterable
from errno import EFAULT, ENOTCONN
from typing import Any, Final

from ._log import Once, RateLimitedLog, logger
from .address import IPNetwork, TrustedNetworks, ip_text
from .config import DEFAULT_TOA_PEERS, Settings
from .core import peer_resolution
from .errors import ConfigError
from .memory import BoundedCache
from .metrics import METRICS
from .proxy_protocol import ProxyHeader, ProxyProtocolReader
from .result import CONNECTION_GONE, NO_PEER, UNIX_PEER, Resolution, Source, make_resolution
from .toa import TOAAnswer, TOAInterface, TOAStatus
from .toa import available as toa_available
from .toa import kernel_peer as toa_kernel_peer
from .toa import loaded_modules as loaded_toa_modules
from .toa import lookup as toa_lookup
from .toa import peer_name as toa_peer_name
from .toa import socket_family as toa_socket_family
from .toa import unavailable_reason as toa_unavailable_reason
from .toa import virtual_server as toa_virtual_server

__all__ = ["CONNECTION_GONE", "DEFAULT_TOA_PEERS", "UNIX_PEER", "ConnectionResolver", "proxy_header_read_by_server"]

#: Seconds a peer has to send its whole PROXY protocol header before the
#: connection is closed (HAProxy's own receivers use a few seconds too).
PROXY_PROTOCOL_TIMEOUT: Final = 5.0

#: After "no TOA module on this host", ask again no sooner than this (seconds):
#: a module loaded later is noticed without a restart, and a host without one
#: pays one system call a minute, not one per connection.
RECHECK_AFTER: Final = 60.0


#: Says once per process that the shim is missing (many resolvers may be built).
_SHIM_MISSING: Final = Once()


def proxy_header_read_by_server(base: Resolution, client: tuple[object, object] | None) -> Resolution:
    """The connection's answer when the server itself read a PROXY header and
    reports only the client it named (gunicorn's ``--proxy-protocol``).

    The server checked its own allow-list (``--proxy-allow-from``): what it
    found is believed, with the peer (``base``, the connection's own answer)
    as the hop. ``None`` (a v2 ``LOCAL`` or v1 ``UNKNOWN`` header, such as a
    health check) leaves the load balancer itself as the client.
    """
    if client is None:
        return base
    found = peer_resolution(client)
    if found.client is None:
        return base
    hops = (base.client[0],) if base.client is not None else ()
    return make_resolution(found.client, base.peer, Source.PROXY_PROTOCOL, hops)


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
        toa_vtoa_metadata: bool = False,
    ) -> None:
        if not isinstance(toa, bool):
            raise ConfigError("toa", toa, "expected True or False")
        self.toa = toa
        #: Ask Alibaba's vtoa for the virtual server (VPC id, VIP, port) of each connection.
        self.toa_vtoa_metadata = bool(toa_vtoa_metadata)
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

    @classmethod
    def from_settings(cls, settings: Settings, **integration: Any) -> ConnectionResolver:
        """The resolver for a middleware's (or an integration's) :class:`~realip.config.Settings`:
        the same ``toa``, ``toa_peers`` and ``trusted_proxies``; ``integration`` adds
        what only a server integration acts on (``proxy_protocol*``)."""
        return cls(
            toa=settings.toa, toa_peers=settings.toa_peers.networks, trusted_proxies=settings.trusted_proxies,
            toa_vtoa_metadata=settings.toa_vtoa_metadata, **integration,
        )  # fmt: skip

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
        # Any other peer too while a module that rewrites peers is loaded: provenance for every connection.
        return found or self._asks_every_peer()

    def resolve(self, sock: object, peer: tuple[str, int] | list[object] | None, *, unix: bool = False) -> Resolution:
        """The connection's answer, starting from the socket peer the server reported.

        ``sock`` is the accepted connection or its file descriptor; ``unix``
        says the listener is a Unix socket (a missing peer on a TCP listener is
        a connection whose peer is gone, never a Unix socket). Never raises.
        Returns :data:`CONNECTION_GONE` for a connection reset before it could
        be asked about.
        """
        if peer is None:
            return UNIX_PEER if unix else NO_PEER
        base = peer_resolution(tuple(peer))
        if sock is None or base.peer is None or not self.wants(base.client):
            return base
        return self._ask(sock, base)

    def _ask(self, sock: object, base: Resolution) -> Resolution:
        """Ask the TOA module(s) about one connection; ``base`` is its socket peer.

        Every interface a module offers (``docs/vendors/index.md``): the 4096
        lookup; a rewritten ``getpeername()``, told by ``EFAULT`` or, for modules
        that answer no lookup at all, by the kernel's TCP table, which also names
        who really connected; Alibaba's V6VTOA peer, read whole. Once per
        connection; the table is read only for rewritten peers, or where such a
        module is loaded.
        """
        try:
            answer = toa_lookup(sock)  # type: ignore[arg-type]
        except TypeError:  # a server's stand-in that is no socket: nothing to ask
            return base
        status = answer.status
        recorder = METRICS.recorder
        if recorder is not None:
            recorder.toa(_toa_result(answer, self.toa_peers, base))
        peer_host = base.client[0]  # type: ignore[index]
        if status is TOAStatus.FOUND:
            address, port = answer.address, answer.port
            assert address is not None and port is not None
            answer = self._vtoa_metadata(
                sock, TOAAnswer(status, address, port, answer.errno, TOAInterface.LOOKUP, base.client)
            )
            if self.toa_peers.contains_text(peer_host):
                return make_resolution((ip_text(address), port), base.peer, Source.TOA, (peer_host,), None, answer)
            # An option from a peer that is not a TOA load balancer: the peer stays the client.
            return base._replace(toa=answer)
        if status is TOAStatus.NONE:
            if answer.rewritten_by_kernel:
                # The module wrote this peer address from a TCP option (IPv4 TOA, or NAT64
                # on an AF_INET6 listener): nothing on the wire vouched for it.
                return self._rewritten_peer(sock, base, answer)
            return base._replace(toa=self._vtoa_metadata(sock, answer))
        if status is TOAStatus.NO_MODULE:
            modules = self._toa_modules()
            if modules:
                # A module that rewrites getpeername() and answers no lookup (Huawei master,
                # UCloud, Alibaba vtoa): the kernel's TCP table tells whether it did.
                self._once(
                    logging.INFO,
                    "realip: TOA module %s loaded; it rewrites getpeername() and answers no lookup, so each new "
                    "connection's peer is compared with the kernel's TCP table (docs/vendors/index.md).",
                    ", ".join(modules),
                )
                return self._rewritten_peer(sock, base, TOAAnswer(TOAStatus.NONE, errno=answer.errno))
            self._module_absent_until = time.monotonic() + self.recheck_after
            self._once(
                logging.WARNING,
                "realip: no TOA kernel module on this host (getsockopt answered ENOPROTOOPT); "
                "NAT64 clients will show as the load balancer. Asking again every %.0fs. See `realip doctor`.",
                self.recheck_after,
            )
            return base._replace(toa=answer)
        if status is TOAStatus.UNAVAILABLE:
            self._module_absent_until = float("inf")
            return base
        if answer.connection_gone:
            logger.debug("realip: connection from %s reset before its TOA lookup: not served", peer_host)
            return CONNECTION_GONE
        self._errors.warning("unexpected TOA lookup error", f"errno {answer.errno} for peer {peer_host}")
        return base._replace(toa=answer)

    # ---- helpers of _ask: the interfaces besides the lookup (docs/vendors/index.md)

    #: The TOA modules under /sys/module, and when to look again (class defaults;
    #: each resolver keeps its own once it has looked).
    _toa_modules_seen: tuple[str, ...] = ()
    _toa_modules_until: float = 0.0

    def _toa_modules(self) -> tuple[str, ...]:
        """The TOA modules loaded on this host (``/sys/module``), looked up at most
        once every ``recheck_after`` seconds: a few ``stat`` calls a minute."""
        now = time.monotonic()
        if now >= self._toa_modules_until:
            self._toa_modules_seen = loaded_toa_modules()
            self._toa_modules_until = now + self.recheck_after
        return self._toa_modules_seen

    def _asks_every_peer(self) -> bool:
        """Whether every peer should be asked about, not only those that would be
        trusted: while a TOA module is loaded, any peer address may have been
        written by it (source ``toa``, never trusted as a proxy), and with
        Alibaba's V6VTOA the address the server got is not even the client's.
        For :meth:`may_ask` / :meth:`wants`; free where no module is loaded (the
        ``/sys/module`` check runs once a minute)."""
        return self.toa and toa_available() and bool(self._toa_modules())

    def _rewritten_peer(self, sock: object, base: Resolution, answer: TOAAnswer) -> Resolution:
        """The answer for a connection whose peer the module may have written.

        ``answer`` says ``EFAULT`` (the module says it did) or comes from a module
        that answers no lookup: then the kernel's TCP table decides (a peer there
        other than ``getpeername()``'s means it did, and where the table cannot
        tell, nothing vouches for the peer either). Who really connected
        (:attr:`TOAAnswer.balancer`) is the table's peer; when it is a trusted
        load balancer it is the hop, otherwise the option came from elsewhere.
        """
        client: tuple[str, int] = base.client  # type: ignore[assignment]
        interface = TOAInterface.REWRITTEN_PEER
        balancer: tuple[str, int] | None = None
        try:
            if ":" in client[0] and toa_socket_family(sock) == socket.AF_INET:  # type: ignore[arg-type]
                # Alibaba's V6VTOA (option 249): a 28-byte AF_INET6 peer on an AF_INET socket,
                # which the server read into 16 bytes. Read it whole.
                client = toa_peer_name(sock)  # type: ignore[arg-type]
                interface = TOAInterface.V6VTOA
            balancer = toa_kernel_peer(sock)  # type: ignore[arg-type]
            if balancer is None:  # not in the table: reset since, or never there
                toa_peer_name(sock)  # type: ignore[arg-type]
        except OSError as exc:
            if exc.errno == ENOTCONN:
                logger.debug("realip: connection from %s reset before its TOA check: not served", client[0])
                return CONNECTION_GONE
            self._errors.warning("cannot read the kernel's TCP table", f"{exc} for peer {client[0]}")
        if (
            interface is TOAInterface.REWRITTEN_PEER
            and answer.errno != EFAULT
            and balancer is not None
            and balancer[0] == client[0]
            and client[1] in (0, balancer[1])  # uWSGI reports no port
        ):
            # The peer the server reported is the one that connected: nothing rewritten.
            return base._replace(toa=self._vtoa_metadata(sock, answer))
        answer = self._vtoa_metadata(
            sock, TOAAnswer(answer.status, answer.address, answer.port, answer.errno, interface, balancer)
        )
        hops = (balancer[0],) if balancer is not None and self.toa_peers.contains_text(balancer[0]) else ()
        return make_resolution(client, base.peer, Source.TOA, hops, None, answer)

    def _vtoa_metadata(self, sock: object, answer: TOAAnswer) -> TOAAnswer:
        """``answer`` with Alibaba vtoa's virtual server, when ``toa_vtoa_metadata``
        is on and the vtoa module is loaded (two getsockopt calls at most)."""
        if not self.toa_vtoa_metadata or "vtoa" not in self._toa_modules():
            return answer
        try:
            found = toa_virtual_server(sock)  # type: ignore[arg-type]
        except OSError as exc:
            self._errors.warning("unexpected vtoa virtual-server error", str(exc))
            return answer
        if found is None:
            return answer
        return TOAAnswer(
            answer.status, answer.address, answer.port, answer.errno, answer.interface, answer.balancer, found
        )


def _toa_result(answer: Any, toa_peers: TrustedNetworks, base: Resolution) -> str:
    """The ``realip_toa_lookups_total`` result of one lookup (:data:`realip.metrics.TOA_RESULTS`)."""
    status = answer.status
    if status is TOAStatus.FOUND:
        return "found" if toa_peers.contains_text(base.client[0]) else "found-untrusted-peer"  # type: ignore[index]
    if status is TOAStatus.NONE:
        return "rewritten-by-kernel" if answer.rewritten_by_kernel else "none"
    if status is TOAStatus.NO_MODULE:
        return "no-module"
    if status is TOAStatus.UNAVAILABLE:
        return "unavailable"
    return "connection-gone" if answer.connection_gone else "error"
