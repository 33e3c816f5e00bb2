"""Strategies: how a deployment says which forwarding header to believe, and how far.

"Strategies, not flags" (realclientip-go): each way of deciding is a small named
class that checks its configuration in its constructor (raising
:class:`~realip.ConfigError`) and has one method, ``decide(value, trusted)``, that
turns the header text into a :class:`Decision`. Pick the one that describes the
topology in front of the application:

* :class:`RightmostUntrusted` (the default): proxies you list as trusted append to
  ``X-Forwarded-For`` or ``Forwarded``; the client is the rightmost entry that is not
  one of them. The safe choice whenever the proxies' addresses are known.
* :class:`HopCount`: exactly N appending proxies, whose addresses you cannot list
  (a cloud load balancer with changing addresses): the client is the Nth entry from
  the right.
* :class:`SingleHeader`: the proxy *sets* (overwrites) a header holding one address,
  such as ``X-Real-IP`` or ``CF-Connecting-IP``.
* :class:`CDNHeader`: a CDN (Cloudflare, CloudFront, Fastly) in front, maybe with
  your own proxies behind it: the CDN's own client header, believed only when the
  request came from the CDN's published addresses; ``X-Forwarded-For`` otherwise.

One header per deployment: a list of headers tried in turn lets the client pick the
one the proxy did not clean. :func:`strategy_from_name` builds a strategy from one
configuration string (an environment variable).

Every ``decide`` is only called once the caller has checked that the socket peer is a
trusted proxy (a header from anyone else is the client talking about itself, and is
never read). ``decide`` never raises: whatever the header holds, the answer is a
:class:`Decision` whose ``ip`` is a parsed address or ``None`` ("use the peer"), with
``error`` saying why the header was not (fully) believed.

A strategy that reads a second header (:class:`CDNHeader`) names it in
``client_header``; the adapters then read that header too, for it alone, and its
``decide`` takes the second text and the socket peer as well.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final, Protocol

from .address import IPAddress, TrustedNetworks
from .errors import ConfigError
from .forwarding import (
    MAX_ENTRIES,
    MAX_HEADER_LENGTH,
    ForwardedElement,
    last_entries,
    parse_forwarded_element,
    parse_list_entry,
    rsplit_forwarded,
    snippet,
)
from .memory import BoundedCache
from .ranges import RangesError, UnknownRangeError, networks

__all__ = [
    "CDN_CLIENT_HEADERS",
    "MISSING",
    "SINGLE_ADDRESS_HEADERS",
    "CDNHeader",
    "ClientHeaderStrategy",
    "Decision",
    "HopCount",
    "RightmostUntrusted",
    "SingleHeader",
    "Strategy",
    "strategy_from_name",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy made of one header value.

    ``ip`` is the client, or ``None``: the strategy declined and the caller uses the
    socket peer. ``port`` is the client port when the chosen entry carried one.
    ``hops`` are the trusted proxy entries walked past, in header order (nearest
    last); the socket peer itself is not among them. ``error`` says why the header was
    not believed, or only partly (the walk stopped early); it is a short fixed-format
    text with at most a cut, ``ascii()``'d snippet of the bad entry, safe to log.
    ``proto`` and ``host`` are the ``Forwarded`` ``proto=`` and ``host=`` of the
    chosen element (validated, lower-cased), else ``None``. ``header`` names the
    header ``ip`` came from when it is not the strategy's ``header`` (a
    :class:`CDNHeader`'s ``client_header``), else ``None``.
    """

    ip: IPAddress | None
    port: int | None
    hops: tuple[IPAddress, ...]
    error: str | None
    proto: str | None = None
    host: str | None = None
    header: str | None = None


class Strategy(Protocol):
    """What the adapters need from a strategy (the classes here, or your own).

    A strategy may also have ``client_header`` (a second lower-case header name)
    and ``ranges`` (:class:`~realip.address.TrustedNetworks` it trusts itself), as
    :class:`CDNHeader` does: the adapters then read the second header for it, the
    peers in ``ranges`` are trusted as proxies, and ``decide`` is called as
    ``decide(value, trusted, client_value, peer)`` (see :meth:`CDNHeader.decide`).
    """

    @property
    def header(self) -> str:
        """The lower-case name of the header to read."""

    def decide(self, value: str, trusted: TrustedNetworks) -> Decision:
        """Decide from the header text (all instances joined with ``","``; ``""`` when absent)."""


class ClientHeaderStrategy(Protocol):
    """A strategy that also reads a second header, from peers it trusts itself (:class:`CDNHeader`)."""

    @property
    def header(self) -> str:
        """The lower-case name of the list header walked (``x-forwarded-for``)."""

    @property
    def client_header(self) -> str:
        """The lower-case name of the second header (``cf-connecting-ip``...)."""

    @property
    def ranges(self) -> TrustedNetworks:
        """The networks the strategy trusts itself: added to ``trusted_proxies``."""

    def decide(self, value: str, trusted: TrustedNetworks, client_value: str = "", peer: str | None = None) -> Decision:
        """Decide from both header texts and the socket peer's address text (``None``: none)."""


_new_object = object.__new__
_set_ip = Decision.__dict__["ip"].__set__  # the slot descriptor
_set_port = Decision.__dict__["port"].__set__  # the slot descriptor
_set_hops = Decision.__dict__["hops"].__set__  # the slot descriptor
_set_error = Decision.__dict__["error"].__set__  # the slot descriptor
_set_proto = Decision.__dict__["proto"].__set__  # the slot descriptor
_set_host = Decision.__dict__["host"].__set__  # the slot descriptor
_set_header = Decision.__dict__["header"].__set__  # the slot descriptor


def _make(
    ip: IPAddress | None,
    port: int | None,
    hops: tuple[IPAddress, ...],
    error: str | None,
    proto: str | None = None,
    host: str | None = None,
    header: str | None = None,
) -> Decision:
    """``Decision(...)`` at half the cost: a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` per field, which is a quarter of a whole ``decide``. Same
    object, same fields (``tests/test_strategies.py`` compares the two)."""
    decision = _new_object(Decision)
    _set_ip(decision, ip)
    _set_port(decision, port)
    _set_hops(decision, hops)
    _set_error(decision, error)
    _set_proto(decision, proto)
    _set_host(decision, host)
    _set_header(decision, header)
    return decision


#: ``Decision.error`` when the header is absent or blank: a trusted proxy that sent
#: none (its own health check, say). A plain decline; nothing was forged.
MISSING: Final = "missing header"
_MISSING: Final = Decision(None, None, (), MISSING)

# A walked trusted hop: (ip, port, element or None).
_Hop = tuple[IPAddress, "int | None", "ForwardedElement | None"]


def _hops(walked: list[_Hop]) -> tuple[IPAddress, ...]:
    """``walked`` is rightmost first; hops are in header order, nearest last."""
    if len(walked) < 2:
        return (walked[0][0],) if walked else ()
    return tuple([hop[0] for hop in reversed(walked)])


def _decision(ip: IPAddress, port: int | None, element: ForwardedElement | None, walked: list[_Hop]) -> Decision:
    if element is None:
        return _make(ip, port, _hops(walked), None)
    return _make(ip, port, _hops(walked), None, element.proto, element.host)


def _stop(walked: list[_Hop], reason: str) -> Decision:
    """The walk stopped at garbage (or a cut): the last trusted hop is the client, if any."""
    if not walked:
        return _make(None, None, (), reason)
    ip, port, element = walked.pop()
    if element is None:
        return _make(ip, port, _hops(walked), reason)
    return _make(ip, port, _hops(walked), reason, element.proto, element.host)


def _failed(exc: Exception) -> Decision:
    return _make(None, None, (), f"internal error: {type(exc).__name__}")


def _element_address(element: ForwardedElement) -> tuple[IPAddress, int | None] | str:
    """The ``for=`` address of an element, or why there is none (which stops a walk)."""
    if element.error is not None:
        return element.error
    node = element.for_
    if node is None:
        return "element without for="
    if node.ip is None:
        return f"for={snippet(node.name or '')} is not an address"
    port = node.port
    return node.ip, port if isinstance(port, int) else None


# --------------------------------------------------------------------------- header names

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^`|~0-9a-z]{1,64}\Z")

#: Headers that never carry a client address; naming one is a configuration mistake.
_REFUSED: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "proxy-authorization",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "via",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-proto",
        "x-forwarded-scheme",
    }
)

#: Headers a proxy or CDN *sets* to one client address; :func:`strategy_from_name`
#: maps their bare names to :class:`SingleHeader`.
SINGLE_ADDRESS_HEADERS: Final = frozenset(
    {
        "cf-connecting-ip",  # Cloudflare
        "fastly-client-ip",  # Fastly
        "fly-client-ip",  # Fly.io
        "true-client-ip",  # Akamai, Cloudflare Enterprise
        "x-azure-clientip",  # Azure Front Door
        "x-envoy-external-address",  # Envoy
        "x-real-ip",  # nginx convention
    }
)


def _header_name(name: object, option: str = "header") -> str:
    if not isinstance(name, str) or not name.isascii():  # "\u212a".lower() is "k"
        raise ConfigError(option, name, "expected a header name (an ASCII str)")
    text = name.lower()  # no strip(): "x-real-ip " in code is a typo (strategy_from_name trims)
    if "_" in text:
        # WSGI turns both "X-Real-IP" and "X_Real_IP" into HTTP_X_REAL_IP: a client
        # could send the underscore spelling past a proxy that only cleans the other.
        raise ConfigError(option, name, "write header names with dashes, not underscores (x-real-ip)")
    if not _TOKEN.match(text):
        raise ConfigError(option, name, "not an HTTP header name (RFC 7230 token, at most 64 characters)")
    if text in _REFUSED:
        raise ConfigError(option, name, "this header never carries a client address")
    return text


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True, slots=True)
class RightmostUntrusted:
    """The client is the rightmost entry that is not a trusted proxy.

    Walks the header from the right, passing entries that are in ``trusted`` (the
    proxies' own addresses, which they appended), and returns the first entry that is
    not: everything left of it was written by the client and is never believed. If
    every entry is trusted, the leftmost is the client (nginx ``real_ip_recursive``).

    An entry that is not an address (garbage, ``""``, ``unknown``, ``_hidden``, a
    malformed ``Forwarded`` element, an element without ``for=``) stops the walk:
    nothing left of it is believed. The decision is then the last trusted hop passed
    (the entry just right of the garbage), or ``None`` when the garbage is rightmost,
    with ``error`` set: that hop is a trusted proxy, so a caller that would rather
    refuse the request than attribute it to a proxy checks ``error``. The same
    happens when the walk reaches the cut of a header with
    more than :data:`~realip.forwarding.MAX_ENTRIES` entries or longer than
    :data:`~realip.forwarding.MAX_HEADER_LENGTH`; a client padding the left of the
    header changes nothing, since the walk never gets there.

    ``header`` is ``"x-forwarded-for"`` (default), ``"forwarded"`` (RFC 7239, which
    also gives ``proto`` and ``host``), or any header holding a comma-separated list of
    addresses.
    """

    header: str = "x-forwarded-for"
    _forwarded: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        header = _header_name(self.header)
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "_forwarded", header == "forwarded")

    def __str__(self) -> str:
        return f"rightmost:{self.header}"

    def decide(self, value: str, trusted: TrustedNetworks) -> Decision:
        try:
            if self._forwarded:
                return _rightmost_forwarded(value, trusted)
            return _rightmost_list(value, trusted)
        except Exception as exc:  # never on any input; the tests hold it to that
            return _failed(exc)

    def _decide_texts(
        self, value: str, trusted: TrustedNetworks, known: BoundedCache | None = None
    ) -> tuple[tuple[str, int], tuple[str, ...]] | None:
        """:meth:`decide` for the common case, in the texts a Resolution holds, or ``None``.

        A list header whose entries, as far as the walk goes, are bare IPv4
        addresses (what nginx, HAProxy and cloud load balancers write) is walked
        here without building address objects: ``((client, 0), hops)``, texts
        canonical, exactly ``str()`` of what :meth:`decide` returns (its ``error``
        is then ``None``). Anything else (``Forwarded``, ports, IPv6, garbage, a
        walk that reaches the cut of a long header, a missing header) gives
        ``None``: ask :meth:`decide`. ``known``: what the walk learnt about bare
        IPv4 entries, kept between calls by the caller (:class:`realip.memory.Memory`).
        """
        found = self._walk_texts(value, trusted, known)
        if found is None or found[2] is not None:
            return None
        return found[0], found[1]

    def _walk_texts(
        self, value: str, trusted: TrustedNetworks, known: BoundedCache | None = None
    ) -> tuple[tuple[str, int], tuple[str, ...], str | None] | None:
        """:meth:`_decide_texts`, and also a walk that reaches the cut of a header longer
        than :data:`~realip.forwarding.MAX_HEADER_LENGTH` or with more than
        :data:`~realip.forwarding.MAX_ENTRIES` entries: ``(client, hops, why)``, the
        last trusted hop passed and the reason, as :meth:`decide` answers then."""
        if self._forwarded:
            return None
        try:
            return _rightmost_list_texts(value, trusted, BoundedCache() if known is None else known)
        except Exception:  # never on any input; decide() then answers (and reports)
            return None


_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET


def _rightmost_list(value: str, trusted: TrustedNetworks) -> Decision:
    if not value:
        return _MISSING
    entries = value.rsplit(",", MAX_ENTRIES)
    cut = None
    if len(entries) > MAX_ENTRIES or len(value) > MAX_HEADER_LENGTH:
        entries, cut = last_entries(value)
    elif len(entries) == 1 and not value.strip(" \t"):
        return _MISSING
    walked: list[_Hop] = []
    for i in range(len(entries) - 1, -1, -1):
        text = entries[i].strip(" \t")
        ip: IPAddress | None = None
        port: int | None = None
        if ":" not in text:  # inlined fast path of parse_list_entry for bare IPv4
            try:
                ip = IPv4Address(_inet_pton(_AF_INET, text))
            except (OSError, ValueError):
                ip = None  # the careful path below decides, and says why
        if ip is None:
            parsed = parse_list_entry(text)
            if isinstance(parsed, str):
                return _stop(walked, parsed)
            ip, port = parsed
        if ip not in trusted:
            return _make(ip, port, _hops(walked), None)
        walked.append((ip, port, None))
    if cut is not None:
        return _stop(walked, cut)
    client, client_port, _ = walked.pop()
    return _make(client, client_port, _hops(walked), None)


_from_bytes = int.from_bytes


#: Entries split off first: most walks end within a few (the client, then the proxies'
#: own); making all ``MAX_ENTRIES`` strings of a long header to use two is most of its cost.
_FIRST_ENTRIES: Final = 8
#: Longest entry, as written (spaces included), kept in the walk's memory: an IPv4
#: address and a little space; a client padding one with kilobytes of blanks is not kept.
_ENTRY_KEY_LENGTH: Final = 32


def _trusted_ipv4(text: str, networks: tuple[tuple[int, int], ...]) -> str | None:
    """A bare IPv4 entry (stripped) as the walk keeps it: the text if it is in a trusted
    network, ``""`` if it is another address; ``None`` when it is not bare IPv4."""
    if ":" in text:
        return None
    try:
        number = _from_bytes(_inet_pton(_AF_INET, text), "big")
    except (OSError, ValueError):
        return None
    for network, mask in networks:
        if number & mask == network:
            return text
    return ""


def _rightmost_list_texts(
    value: str, trusted: TrustedNetworks, known: BoundedCache
) -> tuple[tuple[str, int], tuple[str, ...], str | None] | None:
    """:func:`_rightmost_list` for bare IPv4 entries, in canonical texts; ``None``: not that case.

    ``(client, hops, why)``: ``why`` is ``None``, or the reason of the cut when
    the walk reached it (every entry after it trusted): then, as the full walk
    does, the last trusted hop passed is the client. Only the window
    :func:`~realip.forwarding.last_entries` keeps is split, the last few entries
    first. ``known`` holds, per entry as written (up to 32 characters), its
    address text if it is a trusted proxy, ``""`` if it is another IPv4 address.

    An entry ``inet_pton`` accepts as IPv4 is canonical text already (four decimal
    numbers, no leading zeros: exactly what :mod:`ipaddress` accepts, which
    ``tests/test_forwarding.py`` holds it to), so the stripped entry is the text.
    """
    if not value:
        return None
    networks = trusted._v4  # (network, mask) pairs
    for limit in (_FIRST_ENTRIES, MAX_ENTRIES):
        entries, cut = last_entries(value, limit)
        if not entries:
            return None  # blank: the full walk says it is missing
        walked: list[str] = []  # rightmost first
        for i in range(len(entries) - 1, -1, -1):
            entry = entries[i]
            text = known.get(entry)  # as written: its address if a trusted proxy, "" if another one
            if text is None:
                text = _trusted_ipv4(entry.strip(" \t"), networks)
                if text is None:
                    return None  # a port, IPv6 or garbage (or blank): the full walk says what it is
                if len(entry) <= _ENTRY_KEY_LENGTH:
                    known.put(entry, text)
            if not text:  # not a trusted proxy: the client
                walked.reverse()
                return (entry.strip(" \t"), 0), tuple(walked), None
            walked.append(text)
        if cut is None or limit == MAX_ENTRIES:
            break  # the whole header walked, or the walk reached its cut
    client = walked.pop()  # every entry trusted: the leftmost is the client (or the last hop before the cut)
    walked.reverse()
    return (client, 0), tuple(walked), cut


def _rightmost_forwarded(value: str, trusted: TrustedNetworks) -> Decision:
    walked: list[_Hop] = []
    for text in rsplit_forwarded(value):
        if not isinstance(text, str):  # the Cut
            return _stop(walked, text.reason)
        element = parse_forwarded_element(text)
        found = _element_address(element)
        if isinstance(found, str):
            return _stop(walked, found)
        ip, port = found
        if ip not in trusted:
            return _decision(ip, port, element, walked)
        walked.append((ip, port, element))
    if not walked:
        return _MISSING
    client, client_port, client_element = walked.pop()
    return _decision(client, client_port, client_element, walked)


@dataclass(frozen=True, slots=True)
class HopCount:
    """Exactly ``hops`` proxies stand in front of the application: the client is the ``hops``-th entry from the right.

    For when the proxies' addresses cannot be listed. Each of the ``hops`` proxies
    appends the address it received the request from, so the last ``hops`` entries
    are theirs and the one ``hops`` from the right is what the outermost proxy saw:
    behind one appending proxy, ``hops=1`` takes the rightmost entry. ``trusted`` is
    not consulted past the socket peer: the count *is* the trust, so it must match
    the topology exactly (one too many and the client chooses its address).

    Declines (``ip=None``, ``error`` set) when the header has fewer than ``hops``
    entries, or when one of the last ``hops`` entries is not an address. ``hops`` runs
    from 1 to :data:`~realip.forwarding.MAX_ENTRIES`.
    """

    header: str
    hops: int
    _forwarded: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        header = _header_name(self.header)
        hops = self.hops
        if not isinstance(hops, int) or isinstance(hops, bool) or not 1 <= hops <= MAX_ENTRIES:
            raise ConfigError("hops", hops, f"expected a whole number of proxies from 1 to {MAX_ENTRIES}")
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "_forwarded", header == "forwarded")

    def __str__(self) -> str:
        return f"{self.header}:{self.hops}"

    def decide(self, value: str, trusted: TrustedNetworks) -> Decision:
        try:
            hops = self.hops
            if self._forwarded:
                texts: list[str] = []
                cut = None
                for text in rsplit_forwarded(value, hops):
                    if isinstance(text, str):
                        texts.append(text)
                    else:
                        cut = text.reason
                texts.reverse()
            else:
                texts, cut = last_entries(value, hops)
            if not texts and cut is None:
                return _MISSING
            if len(texts) < hops:
                if cut is not None:
                    return _make(None, None, (), cut)
                return _make(None, None, (), f"expected {hops} entries, found {len(texts)}")
            walked: list[_Hop] = []
            for i in range(len(texts) - 1, -1, -1):
                element: ForwardedElement | None
                if self._forwarded:
                    element = parse_forwarded_element(texts[i])
                    found = _element_address(element)
                else:
                    element = None
                    found = parse_list_entry(texts[i])
                if isinstance(found, str):
                    return _make(None, None, (), found)
                ip, port = found
                walked.append((ip, port, element))
            ip, port, element = walked.pop()
            return _decision(ip, port, element, walked)
        except Exception as exc:
            return _failed(exc)


@dataclass(frozen=True, slots=True)
class SingleHeader:
    """A header the trusted proxy *sets* to exactly one client address.

    For ``X-Real-IP`` (nginx ``proxy_set_header X-Real-IP $remote_addr``),
    ``CF-Connecting-IP``, ``True-Client-IP`` and the like. Only use it for a header
    the proxy always overwrites: one it passes through unchanged is the client's own
    words. A port and brackets are accepted (``[2001:db8::1]:443``).

    Declines (``ip=None``, ``error`` set) when the value is not exactly one address:
    several instances of the header (joined with ``","``) or a list mean something
    upstream appended instead of overwriting, and nothing in it is believed.
    ``Forwarded`` is refused here: use :class:`RightmostUntrusted` or
    :class:`HopCount`.
    """

    header: str

    def __post_init__(self) -> None:
        header = _header_name(self.header)
        if header == "forwarded":
            raise ConfigError(
                "header", self.header, "Forwarded is a list: use RightmostUntrusted('forwarded') or HopCount"
            )
        object.__setattr__(self, "header", header)

    def __str__(self) -> str:
        return f"single:{self.header}"

    def decide(self, value: str, trusted: TrustedNetworks) -> Decision:
        try:
            text = value.strip(" \t")
            if not text:
                return _MISSING
            if "," in text:
                return _make(None, None, (), f"several values {snippet(text)}")
            found = parse_list_entry(text)
            if isinstance(found, str):
                return _make(None, None, (), found)
            ip, port = found
            return _make(ip, port, (), None)
        except Exception as exc:
            return _failed(exc)


#: The CDN strategies (:class:`CDNHeader`): each name is also the named range of the
#: CDN's addresses (``realip.ranges``), mapped to the header the CDN sets to the
#: address of the client that connected to it.
CDN_CLIENT_HEADERS: Final = {
    "cloudflare": "cf-connecting-ip",  # the client's address; Cloudflare overwrites it
    "cloudfront": "cloudfront-viewer-address",  # "<address>:<port>", IPv6 without brackets
    "fastly": "fastly-client-ip",  # the client's address; kept if the client sent one (see below)
}


@dataclass(frozen=True, slots=True)
class CDNHeader:
    """A CDN in front: its own client header, believed only from the CDN's addresses.

    ``cdn`` is ``"cloudflare"`` (``CF-Connecting-IP``), ``"cloudfront"``
    (``CloudFront-Viewer-Address``, ``<address>:<port>``) or ``"fastly"``
    (``Fastly-Client-IP``); the CDN's addresses are the named range of the same
    name (``realip.ranges``: the shipped list, or the newer copy ``realip
    ranges update`` fetched), read once, when the strategy is built.

    **The CDN's addresses are trusted by the strategy itself**: the middleware
    adds them to ``trusted_proxies`` (so the CDN may connect to the application
    directly), and ``trusted_proxies`` then only needs your own proxies between
    the CDN and the application.

    The rule, walking from the socket peer (which the caller checked is trusted)
    leftwards through ``X-Forwarded-For``, past ``trusted`` (your proxies): the
    first hop that is in the CDN's addresses, or not in ``trusted``, decides.

    * **A hop in the CDN's addresses** (the peer itself when the CDN connects to
      the application, else the ``X-Forwarded-For`` entry your proxy appended):
      the CDN handed the request over, and ``client_header`` names the client
      (exactly one address, as in :class:`SingleHeader`; ``Decision.header`` is
      ``client_header``). When the CDN sent no such header, the fallback: the
      walk goes on past the CDN's addresses too, and the first address that is
      neither the CDN's nor yours is the client (CDNs append their client to
      ``X-Forwarded-For``). A ``client_header`` that is not one address is not
      believed: the CDN hop is the client, with ``error`` set.
    * **Any other hop**: the request did not come through the CDN (a client
      reaching your proxy directly): that hop is the client, as in
      :class:`RightmostUntrusted`, and ``client_header`` is never read.

    So a client that bypasses the CDN cannot choose its address with the CDN's
    header, whether it connects to the application (an untrusted peer: nothing
    is read) or to your proxy (its own address decides). ``Decision.error`` of
    this strategy names the header it is about (``"cf-connecting-ip: ..."``,
    ``"x-forwarded-for: ..."``).

    Fastly keeps a ``Fastly-Client-IP`` its client sent unless the service sets
    it (``set req.http.Fastly-Client-IP = client.ip;`` in ``vcl_recv``, on the
    first visit): use ``"fastly"`` only with that in place.
    """

    cdn: str
    client_header: str = field(init=False)
    header: str = field(init=False, default="x-forwarded-for")
    ranges: TrustedNetworks = field(init=False, repr=False, compare=False)
    _with_port: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.cdn.strip().lower() if isinstance(self.cdn, str) else self.cdn
        client_header = CDN_CLIENT_HEADERS.get(name) if isinstance(name, str) else None
        if client_header is None:
            raise ConfigError("cdn", self.cdn, f"expected one of {', '.join(CDN_CLIENT_HEADERS)}")
        try:
            found = networks(name)
        except (UnknownRangeError, RangesError) as exc:
            raise ConfigError("cdn", self.cdn, f"its named range cannot be read: {exc}") from None
        object.__setattr__(self, "cdn", name)
        object.__setattr__(self, "client_header", client_header)
        object.__setattr__(self, "ranges", TrustedNetworks(found))
        object.__setattr__(self, "_with_port", name == "cloudfront")

    def __str__(self) -> str:
        return self.cdn

    def decide(self, value: str, trusted: TrustedNetworks, client_value: str = "", peer: str | None = None) -> Decision:
        """Decide from ``X-Forwarded-For`` (``value``) and the CDN's header (``client_value``).

        ``peer`` is the socket peer's address text (``None``: a peer without an
        address, such as a trusted Unix-socket proxy): when it is in the CDN's
        addresses, the CDN connected directly and ``client_value`` is read.
        """
        try:
            return self._decide(value, trusted, client_value, peer)
        except Exception as exc:  # never on any input; the tests hold it to that
            return _make(None, None, (), f"{self.header}: internal error: {type(exc).__name__}")

    def _decide(self, value: str, trusted: TrustedNetworks, client_value: str, peer: str | None) -> Decision:
        ranges = self.ranges
        entries, cut = last_entries(value)
        i = len(entries)
        walked: list[_Hop] = []  # rightmost first
        if peer is None or not ranges.contains_text(peer):
            # The peer is one of your proxies: walk past them to the CDN, or to the client.
            while True:
                if i == 0:
                    return self._end(walked, cut)  # no CDN hop: every entry was one of your proxies
                i -= 1
                found = parse_list_entry(entries[i])
                if isinstance(found, str):
                    return self._stop(walked, found)
                ip, port = found
                walked.append((ip, port, None))
                if ip in ranges:
                    break  # the CDN handed the request to your proxy
                if ip not in trusted:
                    walked.pop()
                    return _make(ip, port, _hops(walked), None)  # not through the CDN: this hop is the client
        text = client_value.strip(" \t")
        if text:  # the CDN's own header names its client
            client = self._client(text)
            if isinstance(client, str):
                error = f"{self.client_header}: {client}"
                if not walked:
                    return _make(None, None, (), error)  # the peer (the CDN) is the client
                ip, port, _ = walked.pop()
                return _make(ip, port, _hops(walked), error)
            return _make(client[0], client[1], _hops(walked), None, header=self.client_header)
        # The CDN sent no header: X-Forwarded-For, walked on past the CDN's addresses and yours.
        while i:
            i -= 1
            found = parse_list_entry(entries[i])
            if isinstance(found, str):
                return self._stop(walked, found)
            ip, port = found
            if ip not in ranges and ip not in trusted:
                return _make(ip, port, _hops(walked), None)
            walked.append((ip, port, None))
        return self._end(walked, cut)

    def _end(self, walked: list[_Hop], cut: str | None) -> Decision:
        """The walk ran out of entries: at a cut it stops; else the leftmost trusted entry is the client."""
        if cut is not None:
            return self._stop(walked, cut)
        if not walked:
            return _MISSING
        ip, port, _ = walked.pop()
        return _make(ip, port, _hops(walked), None)

    def _stop(self, walked: list[_Hop], reason: str) -> Decision:
        stopped = _stop(walked, reason)
        return _make(stopped.ip, stopped.port, stopped.hops, f"{self.header}: {reason}")

    def _client(self, text: str) -> tuple[IPAddress, int | None] | str:
        """The address in the CDN's header, or why there is none."""
        if "," in text:
            return f"several values {snippet(text)}"
        if not self._with_port:
            return parse_list_entry(text)
        # CloudFront-Viewer-Address: "<address>:<port>", an IPv6 address without brackets.
        host, sep, port = text.rpartition(":")
        if not (sep and port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
            return f"expected <address>:<port>, not {snippet(text)}"
        if host[:1] == "[" and host[-1:] == "]":
            host = host[1:-1]
        found = parse_list_entry(host)
        if isinstance(found, str):
            return found
        if found[1] is not None:
            return f"expected <address>:<port>, not {snippet(text)}"
        return found[0], int(port)


# --------------------------------------------------------------------------- configuration

_GRAMMAR: Final = (
    "expected 'x-forwarded-for', 'forwarded', 'rightmost:<header>', '<header>:<hops>', 'single:<header>', "
    f"a CDN ({', '.join(CDN_CLIENT_HEADERS)}) or one of {', '.join(sorted(SINGLE_ADDRESS_HEADERS))}"
)


def strategy_from_name(spec: str, *, option: str = "strategy") -> Strategy:
    """Build a strategy from one configuration string, e.g. an environment variable.

    Grammar (case-insensitive, surrounding spaces ignored)::

        x-forwarded-for        RightmostUntrusted("x-forwarded-for")
        forwarded              RightmostUntrusted("forwarded")   (RFC 7239)
        rightmost:<header>     RightmostUntrusted(<header>), any list header
        <header>:<hops>        HopCount(<header>, <hops>), e.g. x-forwarded-for:2
        single:<header>        SingleHeader(<header>), e.g. single:x-client-address
        x-real-ip              SingleHeader("x-real-ip"); likewise the other names in
                               SINGLE_ADDRESS_HEADERS (cf-connecting-ip, true-client-ip,
                               fastly-client-ip, fly-client-ip, x-azure-clientip,
                               x-envoy-external-address)
        cloudflare             CDNHeader("cloudflare"): CF-Connecting-IP from Cloudflare's
                               addresses, X-Forwarded-For otherwise; likewise
                               cloudfront (CloudFront-Viewer-Address) and fastly
                               (Fastly-Client-IP)

    Any other bare name is refused rather than guessed: say ``rightmost:`` or
    ``single:``. ``str()`` of a strategy gives back a spec for it. Raises
    :class:`~realip.ConfigError` naming ``option`` and ``spec``.
    """
    if not isinstance(spec, str):
        raise ConfigError(option, spec, "expected a string")
    text = spec.strip().lower()
    if not text:
        raise ConfigError(option, spec, "empty; " + _GRAMMAR)
    try:
        kind, sep, rest = text.partition(":")
        if sep and kind == "rightmost":
            return RightmostUntrusted(rest.strip())
        if sep and kind == "single":
            return SingleHeader(rest.strip())
        name, sep, count = text.rpartition(":")
        if sep:
            count = count.strip()
            if not (count.isascii() and count.isdigit() and len(count) <= 4):
                raise ConfigError(option, spec, "after ':' expected a number of hops; " + _GRAMMAR)
            return HopCount(name.strip(), int(count))
        if text in ("x-forwarded-for", "forwarded"):
            return RightmostUntrusted(text)
        if text in CDN_CLIENT_HEADERS:
            return CDNHeader(text)
        if text in SINGLE_ADDRESS_HEADERS:
            return SingleHeader(text)
        _header_name(text)  # a clearer message for names that are not headers at all
        raise ConfigError(option, spec, "which strategy? " + _GRAMMAR)
    except ConfigError as exc:
        if exc.option == option:
            raise
        raise ConfigError(option, spec, f"{exc.option}: {exc.why}") from None
