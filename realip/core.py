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

from typing import TYPE_CHECKING, Final, Literal

from ._log import RateLimitedLog
from .address import AddressError, ip_text, parse_ip, parse_ip_text
from .forwarding import parse_host, snippet
from .result import Resolution, Source, make_resolution

if TYPE_CHECKING:
    from .address import TrustedNetworks
    from .config import Settings
    from .strategies import Decision

__all__ = ["BoundedCache", "Resolver", "peer_resolution"]

#: Entries a per-process cache may hold before it is emptied. A hostile client
#: that varies its port or headers costs at most this much memory.
CACHE_SIZE: Final = 4096

#: The only schemes a trusted proxy may set (``forwarded_proto``): anything else
#: (``javascript``, ``file``, ...) is an error in the answer and the log.
SCHEMES: Final = frozenset({"http", "https", "ws", "wss"})

#: Longest header text (all values of a request together) kept as a cache key.
#: Longer ones (no chain of real proxies writes them) are decided every time, so
#: that a full cache holds at most ``CACHE_SIZE`` keys of this size.
CACHED_VALUE_LENGTH: Final = 1024


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
    """Decides the client address. One per middleware, built at start-up.

    Everything a request can be answered from is cached, each cache bounded
    (:class:`BoundedCache`): the answer per socket peer, whether a peer is a
    trusted proxy, what the strategy made of a header text (shared by every
    connection that sends it), and the final answer per (connection answer,
    header texts), so that a keep-alive connection's next request costs a few
    dictionary lookups.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        if settings is None:
            from .config import Settings

            settings = Settings.build(environ={})
        self.settings = settings
        self.strategy = settings.strategy
        #: The lower-case header the strategy reads, or ``None`` (headers ignored).
        self.header: str | None = self.strategy.header if self.strategy is not None else None
        self.reject = settings.on_failure == "reject"
        # The settings the per-request paths read, looked up once here.
        self._trusted = settings.trusted_proxies
        self._trust_all = settings.trust_all_peers_unsafe
        self._trust_unix = settings.trust_unix_socket_peers
        self._forwarded = self.header == "forwarded"
        self._proto = settings.forwarded_proto
        self._host = settings.forwarded_host
        #: The middleware's own TOA options, when given: ``None`` (not given: the
        #: integration's settings stand), ``False`` (``toa=False``) or the networks.
        self._toa_allowed: TrustedNetworks | Literal[False] | None = settings.toa_filter()
        # The built-in walk can answer the common header (bare IPv4 entries) in texts,
        # without address objects; anything else, and other strategies, use decide().
        from .strategies import RightmostUntrusted

        self._texts = self.strategy._decide_texts if type(self.strategy) is RightmostUntrusted else None
        self._peer_cache = BoundedCache()
        self._trusted_hosts = BoundedCache()
        #: (id(base), value[, proto, host]) -> (base, Resolution). Keyed by the
        #: identity of the connection's answer (cached per peer / connection), held
        #: in the entry so that the id cannot be reused while the entry lives.
        self._results = BoundedCache()
        #: header text -> what the strategy decided, as texts (see _decided).
        self._decisions = BoundedCache()
        self._log = RateLimitedLog()

    def resolve_peer(self, peer: tuple[str, int] | list[object] | None) -> Resolution:
        """The answer from the socket peer alone (cached per peer)."""
        if peer is None:
            # Cached too, so that a Unix-socket server's requests are dictionary hits.
            self._peer_cache.put(None, _NO_PEER)
            return _NO_PEER
        key = tuple(peer)
        try:
            return self._peer_cache[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        found = peer_resolution(key)  # type: ignore[arg-type]
        self._peer_cache.put(key, found)
        return found

    def trusts(self, base: Resolution) -> bool:
        """Whether forwarding headers on this request may be believed.

        ``base`` is what the transport says (peer, or TOA / PROXY protocol).
        The one rule: an address is trusted as a proxy only if it was seen on
        the wire, by this kernel or by a trusted load balancer. So its address
        must be a trusted proxy, and not one the kernel TOA module wrote into
        ``getpeername()`` from a TCP option (any sender can put one there). A
        peer without an address is trusted only on a Unix-socket listener and
        with ``trust_unix_socket_peers``; a TCP connection whose peer is gone
        (reset before ``getpeername()``) is never trusted.
        """
        if self.strategy is None:
            return False
        client = base.client
        if client is None:
            return self._trust_unix and base.source == Source.UNIX
        if base.toa is not None and base.toa.rewritten_by_kernel:
            return False
        if self._trust_all:
            return True
        host = client[0]
        try:
            return self._trusted_hosts[host]  # type: ignore[no-any-return]
        except KeyError:
            pass
        found = self._trusted.contains_text(host)
        self._trusted_hosts.put(host, found)
        return found

    def admit(self, connection: Resolution) -> Resolution:
        """A server integration's connection answer, held to this middleware's own TOA options.

        The integration asks the TOA module with its settings (``REALIP_*``
        variables or ``realip.uvicorn.protocols(...)``); ``toa=False`` or a
        narrower ``toa_peers`` given to the middleware still act: a TOA
        client they do not allow falls back to the load balancer.
        """
        toa = connection.toa
        if connection.source != Source.TOA or toa is None or toa.rewritten_by_kernel or not connection.hops:
            return connection
        if self._toa_allowed is None:
            return connection
        if self._toa_allowed is not False and self._toa_allowed.contains_text(connection.hops[-1]):
            return connection
        peer = connection.peer
        base = peer_resolution(peer) if peer is not None else _NO_PEER
        return make_resolution(base.client, base.peer, base.source, (), None, toa)

    def apply(self, base: Resolution, value: str, proto: str | None = None, host: str | None = None) -> Resolution:
        """The answer once a trusted proxy's header is read.

        ``value`` is the header text, all instances joined with ``","`` (``""``
        when absent); ``proto`` / ``host`` are ``X-Forwarded-Proto`` /
        ``X-Forwarded-Host`` when those options are on (``Forwarded`` carries its
        own). Cached per (connection answer, header values): a keep-alive
        connection pays the parsing once; and the parsing per header text, so a
        new connection from a proxy relaying a known client does not pay it either.
        """
        # Two items when the options are off: the adapters look the keep-alive case
        # up with the same key before calling here.
        key = (id(base), value) if proto is None and host is None else (id(base), value, proto, host)
        entry = self._results.get(key)
        if entry is not None and entry[0] is base:
            found: Resolution = entry[1]
        else:
            found = self._decide(base, value, proto, host)
            if len(value) + len(proto or "") + len(host or "") <= CACHED_VALUE_LENGTH:
                self._results.put(key, (base, found))
        if found.error is not None:
            self._log.warning("forwarding header not believed", found.error)
        return found

    def _decide(self, base: Resolution, value: str, proto: str | None, host: str | None) -> Resolution:
        decided = self._decisions.get(value)
        if decided is None:
            decided = self._decided(value)
            if len(value) <= CACHED_VALUE_LENGTH:
                self._decisions.put(value, decided)
        client, decision_hops, error, decision_proto, decision_host = decided
        if client is None:
            if error is None:
                # A trusted proxy that sent no header (its own health check, say)
                # is the client: nothing was forged and nothing is wrong.
                return base
            return make_resolution(
                base.client, base.peer, base.source, base.hops, error, base.toa, base.proxy_protocol, base.scheme,
                base.host,
            )  # fmt: skip
        peer_host = base.client[0] if base.client is not None else None
        hops = decision_hops
        if peer_host is not None:
            hops += (peer_host,)
        if base.hops:
            hops += base.hops
        scheme = forwarded_host = None
        proxies = len(hops) - len(base.hops)  # the trusted proxies that handled the request
        if self._proto:
            scheme = decision_proto if self._forwarded else _pick(proto, proxies)
            if scheme is not None:
                scheme = scheme.lower() if scheme.isascii() else scheme  # "\u212a".lower() is "k"
                if scheme not in SCHEMES:
                    if error is None:
                        name = "forwarded" if self._forwarded else "x-forwarded-proto"
                        error = f"{name}: scheme {snippet(scheme)} is not http, https, ws or wss"
                    scheme = None
        if self._host:
            picked = decision_host if self._forwarded else _pick(host, proxies)
            forwarded_host = parse_host(picked) if picked is not None and not self._forwarded else picked
        return make_resolution(client, base.peer, self.header or Source.PEER, hops, error, base.toa,
                               base.proxy_protocol, scheme, forwarded_host)  # fmt: skip

    def _decided(
        self, value: str
    ) -> tuple[tuple[str, int] | None, tuple[str, ...], str | None, str | None, str | None]:
        """What the strategy made of ``value``, in the texts a Resolution holds.

        ``(client, hops, error, proto, host)``; ``client`` is ``None`` when the
        header is not used, and ``error`` then says why (``None``: no header at
        all, the peer is the client). Depends on nothing but ``value``: the
        strategy and the trusted networks are fixed for this resolver.
        """
        assert self.strategy is not None
        if self._texts is not None:
            fast = self._texts(value, self._trusted)
            if fast is not None:
                return fast[0], fast[1], None, None, None
        decision: Decision = self.strategy.decide(value, self._trusted)
        if decision.ip is None:
            if decision.error is None or decision.error == "missing header":
                return None, (), None, None, None
            return None, (), f"{self.header}: {decision.error}", None, None
        return (
            (ip_text(decision.ip), decision.port or 0),
            tuple([ip_text(h) for h in decision.hops]),
            f"{self.header}: {decision.error}" if decision.error is not None else None,
            decision.proto,
            decision.host,
        )


def _pick(value: str | None, proxies: int) -> str | None:
    """The ``X-Forwarded-Proto`` / ``-Host`` entry of the proxy the client connected to.

    Appending proxies leave one entry each, nearest last, so the client's proxy
    wrote the entry ``proxies`` places from the right; entries further left came
    from the client. A proxy that overwrites leaves one entry, which is then
    the answer. The caller checks the entry (a scheme, a host).
    """
    if not value:
        return None
    entries = value.split(",")
    entry = entries[-proxies] if 0 < proxies <= len(entries) else entries[0]
    return entry.strip()


_NO_PEER: Final = Resolution(client=None, peer=None, source=Source.PEER)


#: host text -> (canonical text, source), or None when it is not an address: a new
#: connection from a known host (a proxy, a load balancer) does not parse it again.
_HOSTS: Final = BoundedCache()


def _host(host: str) -> tuple[str, str] | None:
    fast = parse_ip_text(host)
    if fast is not None:
        canonical, version = fast[0], fast[1]
    else:  # the careful path: zone ids, and anything inet_pton refuses
        try:
            ip = parse_ip(host)
        except AddressError:
            return None
        canonical, version = str(ip), ip.version
    return canonical, (Source.MAPPED if version == 4 and ":" in host else Source.PEER)


def peer_resolution(peer: tuple[str, int]) -> Resolution:
    """Normalise the socket peer: unwrap ``::ffff:a.b.c.d``, drop a zone id.

    A peer that is not an IP address (a Unix socket path, a server quirk) is
    left alone: ``client`` is ``None`` and the adapters do not touch it.
    """
    try:
        host, port = peer
        # WSGI servers report REMOTE_PORT as text; uWSGI leaves it out (0: unknown).
        port = int(port) if port not in (None, "") else 0
        try:
            found = _HOSTS[host]
        except KeyError:
            found = _host(host)
            _HOSTS.put(host, found)
    except (AddressError, TypeError, ValueError):  # TypeError: not a pair, not hashable, not text
        found = None
    if found is None:
        return make_resolution(None, peer, Source.PEER)
    return make_resolution((found[0], port), (host, port), found[1])
