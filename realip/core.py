"""The sans-I/O core: decide the client address from plain inputs.

Nothing here touches a socket, a server or a framework. The adapters
(:mod:`realip.asgi`, :mod:`realip.wsgi`, :mod:`realip.django`) hand over what
the server reported (the socket peer, or the connection's answer from
:mod:`realip.connection`) and the text of the configured header; the resolver
returns a :class:`~realip.result.Resolution`.

The order of trust (``docs/security.md``):

1. the socket peer, normalised (``::ffff:a.b.c.d`` is ``a.b.c.d``);
2. a connection-level answer (TOA, PROXY protocol) from a trusted load balancer;
3. a forwarding header, read only when the address from 1-2 is a trusted proxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._log import RateLimitedLog
from .address import AddressError, parse_ip
from .result import Resolution, Source

if TYPE_CHECKING:
    from .config import Settings
    from .strategies import Decision

__all__ = ["BoundedCache", "Resolver", "peer_resolution"]

#: Entries a per-process cache may hold before it is emptied. A hostile client
#: that varies its port or headers costs at most this much memory.
CACHE_SIZE: Final = 4096


class BoundedCache(dict):  # type: ignore[type-arg]
    """A dict that empties itself when it reaches ``limit`` entries.

    Cheaper per hit than an LRU (a plain ``dict.get``), and bounded: the worst
    a flood of distinct keys can do is make every lookup a miss.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int = CACHE_SIZE) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: object, value: object) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value


class Resolver:
    """Decides the client address. One per middleware, built at start-up."""

    def __init__(self, settings: Settings | None = None) -> None:
        if settings is None:
            from .config import Settings

            settings = Settings.build(environ={})
        self.settings = settings
        self.strategy = settings.strategy
        #: The lower-case header the strategy reads, or ``None`` (headers ignored).
        self.header: str | None = self.strategy.header if self.strategy is not None else None
        self.reject = settings.on_failure == "reject"
        self._peer_cache = BoundedCache()
        self._trusted_hosts = BoundedCache()
        self._results = BoundedCache()
        self._log = RateLimitedLog()

    def resolve_peer(self, peer: tuple[str, int] | list[object] | None) -> Resolution:
        """The answer from the socket peer alone (cached per peer)."""
        if peer is None:
            return _NO_PEER
        key = tuple(peer)
        found = self._peer_cache.get(key)
        if found is None:
            found = peer_resolution(key)  # type: ignore[arg-type]
            self._peer_cache.put(key, found)
        return found  # type: ignore[no-any-return]

    def trusts(self, base: Resolution) -> bool:
        """Whether forwarding headers on this request may be believed.

        ``base`` is what the transport says (peer, or TOA / PROXY protocol):
        its address must be a trusted proxy. A Unix-socket peer (no address) is
        trusted only with ``trust_unix_socket_peers``.
        """
        if self.strategy is None:
            return False
        settings = self.settings
        if settings.trust_all_peers_unsafe:
            return True
        client = base.client
        if client is None:
            return settings.trust_unix_socket_peers
        host = client[0]
        found = self._trusted_hosts.get(host)
        if found is None:
            try:
                found = parse_ip(host) in settings.trusted_proxies
            except AddressError:
                found = False
            self._trusted_hosts.put(host, found)
        return found  # type: ignore[no-any-return]

    def apply(self, base: Resolution, value: str, proto: str | None = None, host: str | None = None) -> Resolution:
        """The answer once a trusted proxy's header is read.

        ``value`` is the header text, all instances joined with ``","`` (``""``
        when absent); ``proto`` / ``host`` are ``X-Forwarded-Proto`` /
        ``X-Forwarded-Host`` when those options are on (``Forwarded`` carries its
        own). Cached per (connection answer, header values): a keep-alive
        connection pays the parsing once.
        """
        key = (base.peer, base.client, value, proto, host)
        found = self._results.get(key)
        if found is None:
            found = self._decide(base, value, proto, host)
            self._results.put(key, found)
        if found.error is not None:
            self._log.warning("forwarding header not believed", found.error)
        return found  # type: ignore[no-any-return]

    def _decide(self, base: Resolution, value: str, proto: str | None, host: str | None) -> Resolution:
        assert self.strategy is not None
        decision: Decision = self.strategy.decide(value, self.settings.trusted_proxies)
        if decision.ip is None:
            if decision.error is None or decision.error == "missing header":
                # A trusted proxy that sent no header (its own health check, say)
                # is the client: nothing was forged and nothing is wrong.
                return base
            return _replace(base, error=f"{self.header}: {decision.error}")
        peer_host = base.client[0] if base.client is not None else None
        hops = tuple(str(h) for h in decision.hops)
        if peer_host is not None:
            hops += (peer_host,)
        hops += base.hops
        scheme = forwarded_host = None
        settings = self.settings
        proxies = len(hops) - len(base.hops)  # the trusted proxies that handled the request
        if settings.forwarded_proto:
            scheme = decision.proto if self.header == "forwarded" else _pick(proto, proxies, "proto")
        if settings.forwarded_host:
            forwarded_host = decision.host if self.header == "forwarded" else _pick(host, proxies, "host")
        return Resolution(
            client=(str(decision.ip), decision.port or 0),
            peer=base.peer,
            source=self.header or Source.PEER,
            hops=hops,
            error=f"{self.header}: {decision.error}" if decision.error is not None else None,
            toa=base.toa,
            scheme=scheme,
            host=forwarded_host,
        )


def _replace(base: Resolution, **changes: object) -> Resolution:
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def _pick(value: str | None, proxies: int, kind: str) -> str | None:
    """The ``X-Forwarded-Proto`` / ``-Host`` entry of the proxy the client connected to.

    Appending proxies leave one entry each, nearest last, so the client's proxy
    wrote the entry ``proxies`` places from the right; entries further left came
    from the client. A proxy that overwrites leaves one entry, which is then
    the answer. Anything that is not a scheme / host is ignored.
    """
    if not value:
        return None
    from .forwarding import parse_host, parse_proto

    entries = value.split(",")
    entry = entries[-proxies] if 0 < proxies <= len(entries) else entries[0]
    return (parse_proto if kind == "proto" else parse_host)(entry.strip())


_NO_PEER: Final = Resolution(client=None, peer=None, source=Source.PEER)


def peer_resolution(peer: tuple[str, int]) -> Resolution:
    """Normalise the socket peer: unwrap ``::ffff:a.b.c.d``, drop a zone id.

    A peer that is not an IP address (a Unix socket path, a server quirk) is
    left alone: ``client`` is ``None`` and the adapters do not touch it.
    """
    try:
        host, port = peer
        # WSGI servers report REMOTE_PORT as text; uWSGI leaves it out (0: unknown).
        port = int(port) if port not in (None, "") else 0
        ip = parse_ip(host)
    except (AddressError, TypeError, ValueError):
        return Resolution(client=None, peer=peer, source=Source.PEER)
    source = Source.MAPPED if ip.version == 4 and ":" in host else Source.PEER
    return Resolution(client=(str(ip), port), peer=(host, port), source=source)
