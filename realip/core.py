"""The decision: who the client is, from plain values. No sockets, no servers, no frameworks.

An adapter (:mod:`realip.asgi`, :mod:`realip.wsgi`, :mod:`realip.django`)
reads what the server gives and asks the :class:`Resolver` two things, in
this order:

1. :meth:`Resolver.peer` (or :meth:`Resolver.connection_facts` for a
   server integration's answer): what the transport says, and whether that
   address is a trusted proxy. Decided once per peer host and remembered
   (:mod:`realip.memory`).
2. :meth:`Resolver.read_header` (:meth:`Resolver.read` when more than the
   client comes from the proxy), only for a trusted proxy: what its forwarding
   header says. The header is parsed once per distinct text.

The order of trust (``docs/security.md``):

1. the socket peer, normalised (``::ffff:a.b.c.d`` is ``a.b.c.d``);
2. a connection-level answer (TOA, PROXY protocol) from a trusted load balancer;
3. a forwarding header, read only when the address from 1-2 is a trusted proxy.

**The one rule** (:meth:`Resolver.trusts`): an address is trusted as a proxy
only if it was seen on the wire, by this kernel or by a trusted load balancer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from string import ascii_letters, digits
from typing import Final, Literal, cast

from ._log import Once, RateLimitedLog
from .address import AddressError, TrustedNetworks, ip_text, is_local, parse_ip, parse_ip_text
from .config import Settings
from .forwarding import MAX_HEADER_LENGTH, parse_host, snippet
from .memory import CACHE_SIZE, CACHED_TEXT_LENGTH, HOSTS, BoundedCache, Memory, PeerFacts
from .result import NO_PEER, UNIX_PEER, Resolution, Source, make_resolution
from .strategies import MISSING, ClientHeaderStrategy, Decision, RightmostUntrusted

__all__ = [
    "CACHED_VALUE_LENGTH",
    "CACHE_SIZE",
    "MAX_PREFIX_LENGTH",
    "SCHEMES",
    "BoundedCache",
    "Current",
    "Resolver",
    "cut_header",
    "path_prefix",
    "peer_resolution",
    "port_number",
]

#: The name this limit had before :mod:`realip.memory` held it.
CACHED_VALUE_LENGTH: Final = CACHED_TEXT_LENGTH

_new_tuple = tuple.__new__

#: The only schemes a trusted proxy may set (``forwarded_proto``): anything else
#: (``javascript``, ``file``, ...) is an error in the answer and the log.
SCHEMES: Final = frozenset({"http", "https", "ws", "wss"})

#: ``PeerFacts.current``: (the peer as the server reported it, the transport's answer, ask about it).
Current = tuple[object, Resolution, bool]

#: What the strategy made of a header, in the texts a Resolution holds:
#: ``(client, hops, error, proto, host, source)``; ``client`` is ``None`` when the
#: header is not used, and ``error`` says why (``None``: no header, the peer is the
#: client); ``source`` is the header that named the client when it is not the
#: strategy's ``header`` (a CDN's own), else ``None``.
Decided = tuple["tuple[str, int] | None", "tuple[str, ...]", "str | None", "str | None", "str | None", "str | None"]


def cut_header(value: str) -> str:
    """The part of a header value any strategy looks at: the last
    ``MAX_HEADER_LENGTH`` characters, and one more so that the strategy still sees
    (and reports) that the value was longer. What a client piles up on the left
    is never decoded, hashed, split or scanned."""
    if len(value) > MAX_HEADER_LENGTH + 1:
        return value[-(MAX_HEADER_LENGTH + 1) :]
    return value


class Resolver:
    """Decides the client address. One per middleware, built at start-up from its :class:`~realip.config.Settings`."""

    def __init__(self, settings: Settings, *, gateway: str | None = None) -> None:
        self.settings = settings
        self.strategy = strategy = settings.strategy
        #: The lower-case header the strategy reads, or ``None`` (headers ignored).
        self.header: str | None = strategy.header if strategy is not None else None
        client_header = getattr(strategy, "client_header", None)
        #: The second header a CDN strategy reads (``cf-connecting-ip``...), or ``None``.
        self.client_header: str | None = client_header if isinstance(client_header, str) else None
        self._paired = cast(ClientHeaderStrategy, strategy) if self.client_header is not None else None
        self.reject = settings.on_failure == "reject"
        self.memory = Memory()
        self._trusted = settings.trusted_proxies
        self._forwarded = self.header == "forwarded"
        self._strip = settings.strip_untrusted_headers
        #: What a header that names the client is called in ``Resolution.source``.
        self._source: str = self.header or Source.PEER
        #: Something besides the client comes from a trusted proxy (scheme, host, port, prefix).
        self._extras = (
            settings.forwarded_proto or settings.forwarded_host or settings.forwarded_port or settings.forwarded_prefix
        )
        #: The middleware's own TOA options, when given (see :meth:`admit`).
        self._toa_allowed: TrustedNetworks | Literal[False] | None = settings.toa_filter
        # The built-in walk answers the common header (bare IPv4 entries) in texts,
        # without address objects; anything else, and other strategies, use decide().
        self._texts = strategy._walk_texts if type(strategy) is RightmostUntrusted else None
        self._log = RateLimitedLog()
        self._once = Once()
        #: This host's default gateway (:func:`realip.hints.default_gateway`): a peer
        #: with that address is most likely a NAT gateway or a userland proxy.
        self._gateway = gateway
        #: Whether a new connection from this (normalised) peer is asked about now (TOA;
        #: set by the WSGI adapter): the ``ask`` of ``PeerFacts.current``.
        self.may_ask: Callable[[tuple[str, int]], bool] | None = None

    # ----------------------------------------------------------- what the transport says

    def peer_facts(self, peer: object, *, unix: bool = False, ask: bool = False) -> PeerFacts:
        """What is decided about a socket peer, as the server reported it, with this
        connection as the current one (``facts.current``).

        ``peer`` is ``scope["client"]`` (a tuple or list) or, under WSGI,
        ``(REMOTE_ADDR, REMOTE_PORT)``; ``None`` or a non-address is a peer
        without an address, which is a Unix-socket peer only when ``unix`` says
        the listener is one. ``ask``: ask the connection about it (TOA) whatever
        :attr:`may_ask` says. Remembered per host, except peers without an address.
        """
        found = self.peer(peer)
        if found is None:
            return self.unaddressed(peer, unix=unix)
        facts = found[0]
        if ask and not facts.current[2]:
            facts.current = (*facts.current[:2], True)
        return facts

    def peer(self, peer: object) -> tuple[PeerFacts, Current] | None:
        """The facts of a socket peer as the server reported it (remembered per host),
        and this connection's ``current``; ``None`` when it is not an address (no
        pair, a host that is not an address, a port that is not one).

        The adapters look a keep-alive request's host up themselves and come here
        for a new host or another connection than the host's last one.
        """
        try:
            facts: PeerFacts | None = self.memory.peers.get(peer[0])  # type: ignore[index]
        except (TypeError, KeyError, IndexError):  # None, not a pair, not hashable
            return None
        if facts is None:
            facts = self.new_peer(peer)
            if facts is None:
                return None
        current = facts.current  # read once: another thread may make its own connection current
        if current[0] != peer:
            current = self.connection(facts, peer)  # type: ignore[assignment]
            if current is None:
                return None
        return facts, current

    def connection(self, facts: PeerFacts, peer: object) -> Current | None:
        """The transport's answer for another connection from a remembered host, as
        ``facts.current`` (which it becomes): ``peer`` as the server reported it, a host
        and a port (an int, or text under WSGI; missing: 0, unknown). ``None`` when it
        is not an address after all: not a pair, or a port that is not one."""
        host: object
        port: object
        try:
            host, port = peer  # type: ignore[misc]
        except (TypeError, ValueError):
            return None
        port = _port(port)
        if port is None:
            return None
        pair = peer if type(peer) is tuple and peer[1] is port else (host, port)
        ask = self.may_ask is not None and self.may_ask((facts.client_host, port))  # type: ignore[arg-type]
        return facts.connection(peer, pair, ask)

    def new_peer(self, peer: object) -> PeerFacts | None:
        """The facts of a peer whose host is not remembered yet, remembered (per host),
        with this connection current; ``None`` when it is not an address."""
        host: object
        port: object
        try:
            host, port = peer  # type: ignore[misc]
            hash(host)
        except (TypeError, ValueError):  # not a pair, not hashable
            return None
        if _port(port) is None:
            return None
        base = peer_resolution((host, 0))
        if base.client is None:
            return None
        canonical = base.client[0]
        read = self.header is not None and self.trusts(base)
        if canonical == self._gateway and not read:
            self._gateway_peer(canonical)
        facts = PeerFacts(
            base,
            read,
            not read and self._strip,
            remote_addr=canonical if canonical != host else None,
            source=base.source,
        )
        self.connection(facts, peer)
        self.memory.peers.put(host, facts)
        return facts

    def unaddressed(self, peer: object, *, unix: bool) -> PeerFacts:
        """The facts of a peer without an address (never remembered): a Unix-socket peer
        when ``unix`` says the listener is one; otherwise a TCP connection whose peer is
        gone (reset before ``getpeername()``) or a server's quirk, never trusted."""
        if unix:
            return self.facts_for(UNIX_PEER, key=peer)
        reported = tuple(peer) if isinstance(peer, list) else peer  # Resolution.peer: immutable
        return self.facts_for(NO_PEER if peer is None else make_resolution(None, reported, Source.PEER), key=peer)  # type: ignore[arg-type]

    def _gateway_peer(self, host: str) -> None:
        self._once(
            logging.WARNING,
            "realip: a client connected from %s, this host's default gateway: most likely a container "
            "runtime's NAT gateway or userland proxy (Docker's bridge, docker-proxy), which hides every "
            "client's address before the request arrives. realip cannot recover it here: use host "
            "networking, PROXY protocol from the load balancer, or a proxy that adds X-Forwarded-For "
            "(and trust it). Said once (docs/troubleshooting.md).",
            host,
        )

    def connection_facts(self, answer: Resolution) -> PeerFacts:
        """What is decided about a server integration's connection answer (TOA, PROXY
        protocol), held to this middleware's own TOA options. Remembered per answer."""
        entry = self.memory.connections.get(id(answer))
        if entry is not None and entry[0] is answer:  # the entry holds the answer: its id is not reused
            return entry[1]  # type: ignore[no-any-return]
        facts = self.facts_for(self.admit(answer))
        self.memory.connections.put(id(answer), (answer, facts))
        return facts

    def facts_for(self, resolution: Resolution, *, ask: bool = False, key: object = None) -> PeerFacts:
        """The facts of an answer (not remembered: the caller keeps them, per socket or
        per connection answer); ``key``: the peer as the server reported it, if any."""
        read = self.header is not None and self.trusts(resolution)
        client = resolution.client
        peer = resolution.peer
        addr = None
        if client is not None and peer is not None and client != peer and client[0] != peer[0]:
            addr = client[0]  # the WSGI REMOTE_ADDR to write
        return PeerFacts(resolution, read, not read and self._strip, ask, addr, key=key, source=resolution.source)

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
            return self.settings.trust_unix_socket_peers and base.source == Source.UNIX
        if base.toa is not None and base.toa.rewritten_by_kernel:
            return False
        if self.settings.trust_all_peers_unsafe:
            return True
        host = client[0]
        found: bool | None = self.memory.trusted_hosts.get(host)
        if found is None:
            found = self._trusted.contains_text(host)
            self.memory.trusted_hosts.put(host, found)
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
        allowed = self._toa_allowed
        if allowed is None or (allowed is not False and allowed.contains_text(connection.hops[-1])):
            return connection
        peer = connection.peer
        base = peer_resolution(peer) if peer is not None else NO_PEER
        return base._replace(toa=toa)

    def stripped(self, resolution: Resolution) -> None:
        """Called when an untrusted peer's forwarding headers were removed: a peer in
        private or loopback space is most likely a proxy missing from
        ``trusted_proxies`` (or a container runtime's gateway); say so, once."""
        client = resolution.client
        if client is not None and is_local(client[0]):
            self._once(
                logging.WARNING,
                "realip: a peer in private or loopback address space (%s) sent forwarding headers, and realip "
                "removed them because it is not in trusted_proxies. If it is your proxy, add its address to "
                "trusted_proxies (REALIP_TRUSTED_PROXIES); if it is a container runtime's NAT gateway or userland "
                "proxy, the client cannot be recovered here (see docs/proxies.md). Said once.",
                client[0],
            )

    # ----------------------------------------------------------- what a trusted proxy says

    def read_header(self, facts: PeerFacts, base: Resolution, raw: str | bytes) -> Resolution:
        """The answer when a trusted proxy's header decides the client and nothing else
        (no extras, no CDN header): the common case, on one call.

        ``raw`` is the header as the server gave it (ASGI: bytes; WSGI: text),
        all instances joined with ``","``; only its last ``MAX_HEADER_LENGTH``
        characters are decoded. What the strategy makes of a short text is
        remembered per text, and the answer per connection (``facts.last``).
        ``base`` is the transport's answer for this connection (``facts.current``).
        """
        found = self._answer(base, self._decision(raw))
        if found.error is None:
            if len(raw) <= CACHED_TEXT_LENGTH:
                facts.last = (raw, found)
        else:
            self._log.warning("forwarding header not believed", found.error)
        return found

    def read(
        self,
        base: Resolution,
        value: str,
        proto: str | None = None,
        host: str | None = None,
        *,
        port: str | None = None,
        prefix: str | None = None,
        client: str = "",
    ) -> Resolution:
        """The answer once a trusted proxy's header is read (``facts.read``); ``base``
        is the transport's answer for this connection.

        ``value`` is the header text, all instances joined with ``","`` (``""``
        when absent), cut with :func:`cut_header`; ``proto`` / ``host`` /
        ``port`` / ``prefix`` are ``X-Forwarded-Proto`` / ``-Host`` / ``-Port`` /
        ``-Prefix`` when those options are on (``Forwarded`` carries its own
        proto and host, and no port or prefix); ``client`` is the text of the
        strategy's :attr:`client_header` (a CDN's), cut the same way. A failure
        is logged (rate-limited).
        """
        found = self.apply(base, value, proto, host, port=port, prefix=prefix, client=client)
        if found.error is not None:
            self._log.warning("forwarding header not believed", found.error)
        return found

    def apply(
        self,
        base: Resolution,
        value: str,
        proto: str | None = None,
        host: str | None = None,
        *,
        port: str | None = None,
        prefix: str | None = None,
        client: str = "",
    ) -> Resolution:
        """The answer for ``base`` (a trusted proxy's) with these header texts: a pure
        function of its inputs and the settings. The parsing is remembered per text."""
        if self._paired is not None:  # a CDN strategy: two headers and the peer decide
            decided = self._decided_paired(value, client, base.client[0] if base.client is not None else None)
        else:
            decided = self._decision(value)
        found = self._answer(base, decided)
        if not self._extras or decided[0] is None:  # nothing but the client comes from the headers, or no client
            return found
        _, _, error, decision_proto, decision_host, _ = decided
        hops = found.hops
        scheme = forwarded_host = forwarded_prefix = None
        server_port = None
        proxies = len(hops) - len(base.hops)  # the trusted proxies that handled the request
        settings = self.settings
        if settings.forwarded_proto:
            scheme = decision_proto if self._forwarded else _pick(proto, proxies)
            if scheme is not None:
                scheme = scheme.lower() if scheme.isascii() else scheme  # "\u212a".lower() is "k"
                if scheme not in SCHEMES:
                    if error is None:
                        name = "forwarded" if self._forwarded else "x-forwarded-proto"
                        error = f"{name}: scheme {snippet(scheme)} is not http, https, ws or wss"
                    scheme = None
        if settings.forwarded_host:
            picked = decision_host if self._forwarded else _pick(host, proxies)
            forwarded_host = parse_host(picked) if picked is not None and not self._forwarded else picked
        if settings.forwarded_port:  # X-Forwarded-Port, with Forwarded too (it carries none)
            picked = _pick(port, proxies)
            if picked is not None:
                server_port = port_number(picked)
                if server_port is None and error is None:
                    error = f"x-forwarded-port: {snippet(picked)} is not a port (1-65535)"
        if settings.forwarded_prefix:  # X-Forwarded-Prefix, with Forwarded too (it carries none)
            picked = _pick(prefix, proxies)
            if picked is not None:
                forwarded_prefix, why = path_prefix(picked)
                if why is not None and error is None:
                    error = f"x-forwarded-prefix: {snippet(picked)} is not a path prefix: {why}"
        return make_resolution(found.client, found.peer, found.source, hops, error, found.toa,
                               found.proxy_protocol, scheme, forwarded_host, server_port,
                               forwarded_prefix or None)  # fmt: skip

    def _decision(self, raw: str | bytes) -> Decided:
        """What the strategy made of a header text as the server gave it (ASGI bytes, WSGI
        text): remembered per short text; a long one is never hashed or kept, and only
        its last ``MAX_HEADER_LENGTH`` characters (and one) are decoded."""
        if len(raw) <= CACHED_TEXT_LENGTH:  # a text no chain of proxies exceeds: remembered
            decided: Decided | None = self.memory.decisions.get(raw)
            if decided is None:
                decided = self._decided(_as_text(raw))
                self.memory.decisions.put(raw, decided)
            return decided
        return self._decided(_as_text(raw[-(MAX_HEADER_LENGTH + 1) :]))

    def _answer(self, base: Resolution, decided: Decided) -> Resolution:
        """The answer for ``base`` (a trusted proxy's) once its header is decided: the
        client it names, the trusted proxies it passed (nearest last), or why not."""
        client_address, decision_hops, error, _, _, named_by = decided
        if client_address is None:
            if error is None:
                # A trusted proxy that sent no header (its own health check, say)
                # is the client: nothing was forged and nothing is wrong.
                return base
            return base._replace(error=error)
        client = base.client
        hops = (*decision_hops, client[0]) if client is not None else decision_hops
        if base.hops:
            hops += base.hops
        return _new_tuple(Resolution, (client_address, base.peer, named_by or self._source, hops, error, base.toa,
                                       base.proxy_protocol, None, None, None, None))  # fmt: skip

    def _decided(self, value: str) -> Decided:
        """What the strategy made of ``value``. Depends on nothing but ``value``: the
        strategy and the trusted networks are fixed for this resolver."""
        assert self.strategy is not None
        if self._texts is not None:
            fast = self._texts(value, self._trusted, self.memory.entries)
            if fast is not None:
                return fast[0], fast[1], f"{self.header}: {fast[2]}" if fast[2] is not None else None, None, None, None
        decision: Decision = self.strategy.decide(value, self._trusted)
        if decision.ip is None:
            if decision.error is None or decision.error == MISSING:
                return None, (), None, None, None, None
            return None, (), f"{self.header}: {decision.error}", None, None, None
        return _as_texts(decision, f"{self.header}: {decision.error}" if decision.error is not None else None)

    def _decided_paired(self, value: str, client: str, peer: str | None) -> Decided:
        """What a CDN strategy made of ``X-Forwarded-For``, its own header and the
        socket peer; remembered per (both texts, peer). Its errors name their header."""
        assert self._paired is not None
        cached = len(value) + len(client) <= CACHED_TEXT_LENGTH  # never hash a long text
        key = (value, client, peer)
        if cached:
            found: Decided | None = self.memory.decisions.get(key)
            if found is not None:
                return found
        decision = self._paired.decide(value, self._trusted, client, peer)
        if decision.ip is None:
            error = None if decision.error == MISSING else decision.error
            decided: Decided = (None, (), error, None, None, None)
        else:
            decided = _as_texts(decision, decision.error)
        if cached:
            self.memory.decisions.put(key, decided)
        return decided


def _as_text(raw: str | bytes) -> str:
    """Header bytes as the server gave them (ASGI), as text; WSGI's are text already."""
    return raw.decode("latin-1") if type(raw) is bytes else raw  # type: ignore[return-value]


def _as_texts(decision: Decision, error: str | None) -> Decided:
    """A decision that named a client, in the texts a Resolution holds."""
    assert decision.ip is not None
    return (
        (ip_text(decision.ip), decision.port or 0),
        tuple([ip_text(h) for h in decision.hops]),
        error,
        decision.proto,
        decision.host,
        decision.header,
    )


def port_number(text: str) -> int | None:
    """An ``X-Forwarded-Port`` entry as a port: ASCII digits only, 1 to 65535; else ``None``."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        return None
    number = int(text)
    return number if 0 < number <= 65535 else None


#: Longest ``X-Forwarded-Prefix`` believed.
MAX_PREFIX_LENGTH: Final = 256
#: What a prefix may hold: the characters RFC 3986 allows in a path unencoded.
#: No ``%`` (an encoded character could hide ``..``, ``/`` or ``?``), no ``\``,
#: ``?``, ``#``, spaces, control or non-ASCII characters.
_PREFIX_CHARACTERS: Final = frozenset(ascii_letters + digits + "-._~!$&'()*+,;=:@/")


def path_prefix(text: str) -> tuple[str, None] | tuple[None, str]:
    """An ``X-Forwarded-Prefix`` entry as ``(prefix, None)``, or ``(None, why not)``.

    A prefix is a path: it starts with ``/`` (so no scheme) but not ``//`` (a
    host), at most :data:`MAX_PREFIX_LENGTH` characters of those RFC 3986 allows
    in a path unencoded, with no empty, ``.`` or ``..`` segment. One trailing
    ``/`` is dropped: ``"/api/"`` is ``"/api"``, and ``"/"`` is ``""`` (no prefix).
    """
    if len(text) > MAX_PREFIX_LENGTH:
        return None, f"longer than {MAX_PREFIX_LENGTH} characters"
    if text[:1] != "/":
        return None, "it must start with /"
    if text[:2] == "//":
        return None, "it starts with // (a host, not a path)"
    if not _PREFIX_CHARACTERS.issuperset(text):
        return None, "only letters, digits and -._~!$&'()*+,;=:@/ are allowed (no %, \\, ?, #, spaces or controls)"
    prefix = text[:-1] if text.endswith("/") else text
    for segment in prefix.split("/")[1:]:
        if segment in ("", ".", ".."):
            return None, "an empty, . or .. segment"
    return prefix, None


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


def _port(reported: object) -> int | None:
    """A peer's port as the server reported it (an int; WSGI: text, which uWSGI leaves
    out: 0, unknown), or ``None`` when it is not a port (then the peer is not an address)."""
    if type(reported) is int:
        return reported if 0 <= reported <= 65535 else None
    if reported is None or reported == "":
        return 0
    try:
        port = int(reported)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return port if 0 <= port <= 65535 else None


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


def peer_resolution(peer: object) -> Resolution:
    """Normalise the socket peer ``(host, port)``: unwrap ``::ffff:a.b.c.d``, drop a zone id.

    A peer that is not an IP address (a Unix socket path, a server quirk) is
    left alone: ``client`` is ``None`` and the adapters do not touch it. The
    host is parsed once per process (:data:`realip.memory.HOSTS`).
    """
    host: object = None
    port: object = None
    found: tuple[str, str] | bool | None = None
    try:
        host, port = peer  # type: ignore[misc]
        # WSGI servers report REMOTE_PORT as text; uWSGI leaves it out (0: unknown).
        if type(port) is not int:
            port = int(port) if port not in (None, "") else 0  # type: ignore[call-overload]
        found = HOSTS.get(host, False)
        if found is False:
            found = _host(host)  # type: ignore[arg-type]
            HOSTS.put(host, found)
    except (AddressError, TypeError, ValueError):  # TypeError: not a pair, not hashable, not text
        found = None
    if not isinstance(found, tuple):
        return make_resolution(None, peer, Source.PEER)  # type: ignore[arg-type]
    pair = (host, port)
    return make_resolution(pair if found[0] == host else (found[0], port), pair, found[1])  # type: ignore[arg-type]
