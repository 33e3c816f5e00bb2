"""Forwarding headers: pure parsers for ``X-Forwarded-For`` style lists and RFC 7239 ``Forwarded``.

Nothing here does I/O or decides trust; :mod:`realip.strategies` walks what these
functions return. The rules every function follows (see ``docs/security.md``):

* **Garbage is never passed through.** An entry that is not an address comes back as
  :class:`~realip.address.AddressError` (lists) or as a malformed
  :class:`ForwardedElement` (``Forwarded``); whatever is returned as an address is an
  :mod:`ipaddress` object, unmapped (``::ffff:1.2.3.4`` is ``1.2.3.4``), never raw text.
* **Garbage is never skipped.** Empty entries, ``unknown``, obfuscated identifiers
  (``_hidden``) and malformed elements stay in the list at their position, so that a
  walk from the right stops there instead of stepping over them to whatever the client
  wrote further left.
* **Parsing happens from the right.** Only the right end of a forwarding header was
  written by trusted proxies; the left end is whatever the client sent. The
  ``Forwarded`` splitter therefore finds element boundaries scanning right to left, so
  an unbalanced quote the client planted on the left cannot swallow the elements the
  proxies appended (a left-to-right parser would see one long malformed element and
  fall back to the proxy's own address, which is what the attacker wanted).
* **Bounded work.** Only the last :data:`MAX_HEADER_LENGTH` characters and the last
  :data:`MAX_ENTRIES` entries are looked at. What lies beyond is not dropped silently:
  it is reported (``cut`` from :func:`last_entries`, a :class:`Cut` from
  :func:`rsplit_forwarded`, a malformed first element from :func:`parse_forwarded`)
  so that a walk stops exactly where the cut is. Because walks go right to left,
  keeping a suffix gives the same answer as reading the whole header whenever the
  answer lies inside the suffix, and an explicit failure otherwise; a client padding
  the left of a header changes nothing.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from .address import MAX_HOST_PORT_LENGTH, AddressError, IPAddress, parse_host_port, parse_ip

__all__ = [
    "FORWARDING_HEADERS",
    "MAX_ENTRIES",
    "MAX_HEADER_LENGTH",
    "Cut",
    "ForwardedElement",
    "Node",
    "last_entries",
    "parse_forwarded",
    "parse_forwarded_element",
    "parse_host",
    "parse_list_entry",
    "parse_node",
    "parse_proto",
    "parse_xff_entry",
    "rsplit_forwarded",
    "snippet",
    "split_list",
]

#: Characters of a header value that are looked at, counted from the right.
#: 8 KiB is the per-line limit of nginx (``large_client_header_buffers``), Apache and
#: gunicorn (``limit_request_field_size`` 8190), so a longer value is several joined
#: instances or an attack. It still holds 64 ``Forwarded`` elements of ~125 characters,
#: far more than any real chain of trusted proxies writes.
MAX_HEADER_LENGTH: Final = 8192

#: Entries (list items or ``Forwarded`` elements) that are looked at, counted from the
#: right. A walk only passes trusted proxies, and no deployment chains 64 of them; the
#: cap bounds the per-request work (each entry costs an address parse) whatever the
#: client sends.
MAX_ENTRIES: Final = 64

#: Longest text of a bad entry shown in an error message (before ``ascii()``).
SNIPPET_LENGTH: Final = 40

_OWS: Final = " \t"

# RFC 7230 tchar; ABNF ranges written out so no locale or Unicode class sneaks in.
_TCHAR: Final = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
# qdtext without obs-text (non-ASCII is refused) and quoted-pair without obs-text.
_QDTEXT: Final = r"\t !#-\[\]-~"
# Unquoted values are read leniently: any visible ASCII character but the three that
# delimit ('"', ",", ";"). RFC 7239 wants a token, so IPv6 addresses, ports and odd
# hosts quoted, but nginx's common ``for=$remote_addr`` and ``host=$host`` write them
# bare. Boundaries are unaffected, and each value is then checked strictly by its own
# parameter's grammar (node, scheme, host).
_BARE: Final = r"!#-+\--:<-~"
# One forwarded-pair (or an empty one) with its terminating ";" or the end. The quoted
# string is the unrolled ``"[^"\\]*(\\.[^"\\]*)*"`` form: linear, no backtracking
# blow-up on an unterminated string.
_PAIR: Final = re.compile(
    rf"[ \t]*(?:([{_TCHAR}]+)=(?:([{_BARE}]+)|\"([{_QDTEXT}]*(?:\\[\t -~][{_QDTEXT}]*)*)\"))?[ \t]*(;|\Z)"
)
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)
_OBFUSCATED: Final = re.compile(r"_[A-Za-z0-9._-]+\Z")
# RFC 3986 scheme, lower-cased before matching.
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.-]{0,31}\Z")
# Host [":" port], lower-cased before matching. Stricter than RFC 3986 reg-name (as
# Django's host validation is): letters, digits, "-", ".", "_"; or an IP literal. No
# sub-delims, no percent-encoding: nothing that means something to a shell, SQL or HTML.
_HOST: Final = re.compile(r"(?:([a-z0-9_.-]{1,253})|\[([0-9a-f:.]{2,45})\])(?::([0-9]{1,5}))?\Z")
#: Parameters per element: for, by, proto, host and a few extensions. Bounds the work
#: a single long element can cause.
_MAX_PAIRS: Final = 16
_ZONE: Final = re.compile(r"[A-Za-z0-9._-]{1,16}\Z")


#: Every header that says who the client is or how it connected, as written by
#: proxies, CDNs and load balancers (lower case). From a peer that is not a
#: trusted proxy each of these came from the client itself, and realip removes
#: them all (``strip_untrusted_headers``), whatever header it is configured to
#: read, so that no library downstream believes them either.
FORWARDING_HEADERS: Final = (
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
)


def snippet(text: str) -> str:
    """``text`` fit for a log line: cut to :data:`SNIPPET_LENGTH` characters, ``ascii()``'d."""
    if len(text) > SNIPPET_LENGTH:
        return ascii(text[:SNIPPET_LENGTH]) + "..."
    return ascii(text)


# --------------------------------------------------------------------------- lists


def split_list(value: str) -> list[str]:
    """Split an HTTP list header value into entries, in header order, trimmed.

    ``value`` is all instances of the header joined with ``","``. A value that is
    empty or only spaces has no entries (``[]``). Empty entries (``"a,,b"``,
    ``"a, "``) are kept as ``""``: RFC 7230 lets a recipient ignore them, but no proxy
    writes one, and dropping them would let a walk step over a gap to whatever the
    client wrote further left. A walk treats ``""`` as garbage and stops.

    Only spaces and tabs are trimmed: other control characters stay, and make the
    entry invalid. There is no quoting: ``Forwarded`` needs :func:`parse_forwarded`.
    No cap is applied; walks use :func:`last_entries`.
    """
    if not value.strip(_OWS):
        return []
    return [entry.strip(_OWS) for entry in value.split(",")]


def last_entries(value: str, limit: int = MAX_ENTRIES) -> tuple[list[str], str | None]:
    """The last ``limit`` entries of a list header, within its last :data:`MAX_HEADER_LENGTH` characters.

    Returns ``(entries, cut)``: the entries in header order, **untrimmed** (a walk
    strips only those it reaches), and ``cut``: ``None`` when they are the whole
    header, else the reason why something left of them was cut off. The cut part is
    not returned, not even partly (cutting ``10.1.2.3`` in the middle could leave the
    valid ``0.1.2.3``); a walk that runs out of entries with ``cut`` set must stop
    there, as at garbage. A value that is empty or only spaces gives ``([], None)``.
    """
    if len(value) > MAX_HEADER_LENGTH:
        entries = value[-MAX_HEADER_LENGTH:].rsplit(",", limit)
        del entries[0]  # the partial entry at the cut (or the rest beyond `limit`)
        return entries, f"header longer than {MAX_HEADER_LENGTH} characters"
    if not value.strip(_OWS):
        return [], None
    entries = value.rsplit(",", limit)
    if len(entries) > limit:
        del entries[0]
        return entries, f"more than {limit} entries"
    return entries, None


def parse_xff_entry(text: str) -> tuple[IPAddress, int | None]:
    """Parse one ``X-Forwarded-For`` entry into ``(ip, port or None)``.

    Accepted: ``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]``, ``[2001:db8::1]:443``,
    a bare IPv6 address (every colon belongs to the address, so ``2001:db8::1:443`` is
    an address without a port), ``::ffff:1.2.3.4`` (which is ``1.2.3.4``), NAT64
    ``64:ff9b::1.2.3.4`` (an IPv6 address, never cut into ``host:port``), and a zone id
    of letters and digits (split off). Surrounding spaces and tabs are ignored.

    Raises :class:`AddressError` for anything else, including the ``Forwarded`` markers
    ``unknown`` and ``_obfuscated`` (they are not addresses), empty text, control
    characters and non-ASCII text.
    """
    if not isinstance(text, str):
        raise AddressError(text, "not a string")
    text = text.strip(_OWS)
    if not text:
        raise AddressError(text, "empty entry")
    if text.lower() == "unknown":
        raise AddressError(text, "unknown is not an address")
    if text[0] == "_":
        raise AddressError(text, "obfuscated identifier is not an address")
    if "%" in text:
        _check_zone(text)
    return parse_host_port(text)


def _check_zone(text: str) -> None:
    # parse_ip splits a zone id off without looking at it: "fe80::1%<script>" would pass.
    zone = text.partition("%")[2]
    if zone.endswith("]") or "]:" in zone:
        zone = zone.rpartition("]")[0]
    if not _ZONE.match(zone):
        raise AddressError(text, "bad zone id")


_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


def _ip_fast(text: str) -> IPAddress | None:
    """An address through the C library's ``inet_pton``, 3-5x faster than :mod:`ipaddress`.

    ``None`` whenever ``inet_pton`` refuses, and the careful path (:func:`parse_ip`)
    decides, with its error message. ``inet_pton`` (glibc, musl, BSD) accepts dotted
    quads without leading zeros and RFC 4291 IPv6 text, no zone ids: what
    :mod:`ipaddress` accepts (``tests/test_forwarding.py`` checks that they agree).
    Either way the result is an address object, never the text.
    """
    try:
        if ":" in text:
            ip = IPv6Address(_inet_pton(_AF_INET6, text))
            mapped = ip.ipv4_mapped
            return ip if mapped is None else mapped
        return IPv4Address(_inet_pton(_AF_INET, text))
    except (OSError, ValueError):
        return None


def _port_fast(text: str) -> int | None:
    if 1 <= len(text) <= 5 and text.isdigit() and text.isascii():
        port = int(text)
        if port <= 65535:
            return port
    return None


def parse_list_entry(text: str) -> tuple[IPAddress, int | None] | str:
    """:func:`parse_xff_entry` for walks: ``(ip, port)``, or the reason it is not an address.

    Never raises for ``str`` input. Well-formed entries take a fast path through
    ``inet_pton``; everything else, and the error message, comes from
    :func:`parse_xff_entry`, so the result is the same.
    """
    text = text.strip(_OWS)
    if text[:1] == "[":
        host, sep, rest = text[1:].partition("]")
        if sep and ":" in host:
            ip = _ip_fast(host)
            if ip is not None:
                if not rest:
                    return ip, None
                if rest[0] == ":":
                    port = _port_fast(rest[1:])
                    if port is not None:
                        return ip, port
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        ip = _ip_fast(host)
        if ip is not None:
            port = _port_fast(rest)
            if port is not None:
                return ip, port
    else:
        ip = _ip_fast(text)
        if ip is not None:
            return ip, None
    try:
        return parse_xff_entry(text)
    except AddressError as exc:
        return f"invalid entry {snippet(text)}: {exc.why}"


# --------------------------------------------------------------------------- Forwarded


@dataclass(frozen=True, slots=True)
class Node:
    """An RFC 7239 node: the value of ``for=`` or ``by=``.

    One of two shapes:

    * an address: ``ip`` is set and ``name`` is ``None``;
    * a marker that is not an address: ``ip`` is ``None`` and ``name`` is ``"unknown"``
      (the proxy did not know) or an obfuscated identifier such as ``"_hidden"`` (the
      proxy would not say, RFC 7239 section 6.3). Nobody can tell whether a marker is a
      trusted proxy, so a walk stops at one.

    ``port`` is the port number, an obfuscated port (a ``str`` starting with ``"_"``),
    or ``None`` when the node carried none.
    """

    ip: IPAddress | None
    port: int | str | None = None
    name: str | None = None

    @property
    def is_address(self) -> bool:
        return self.ip is not None


@dataclass(frozen=True, slots=True)
class ForwardedElement:
    """One element of a ``Forwarded`` header (the text between two commas).

    ``for_``, ``by``: the nodes, or ``None`` when the parameter is absent.
    ``proto``: the scheme, lower-cased, RFC 3986 grammar; ``None`` when absent or not a
    valid scheme. ``host``: ``host[:port]``, lower-cased, letters, digits, ``-._`` or
    an IP literal; ``None`` when absent or invalid. ``proto`` and ``host`` are dropped
    rather than failing the element because ``host`` usually copies the Host header the
    *client* sent: a bad one must not let a client turn its own element into garbage
    (which would make the walk fall back to a proxy's address).

    ``error`` is set when the element is malformed (bad syntax, a parameter given twice,
    a ``for``/``by`` that is not a node, non-ASCII or control characters, an empty
    element, or the cut-off rest of an over-long header); every other field is then
    ``None``. A malformed element, an
    element without ``for=``, and a ``for=`` marker all stop a walk.
    """

    for_: Node | None = None
    by: Node | None = None
    proto: str | None = None
    host: str | None = None
    error: str | None = None

    @property
    def malformed(self) -> bool:
        return self.error is not None


def parse_node(text: str) -> Node:
    """Parse an RFC 7239 node (already unquoted): ``nodename [":" node-port]``.

    ``192.0.2.43``, ``192.0.2.43:47011``, ``[2001:db8::1]``, ``[2001:db8::1]:4711``,
    ``unknown``, ``_hidden``, ``_hidden:_port``, ``192.0.2.43:_p1``. Leniently, also a
    bare IPv6 address (nginx ``for=$remote_addr``), which has no port. Raises
    :class:`AddressError` for anything else.
    """
    if not text.isascii() or len(text) > MAX_HOST_PORT_LENGTH + 8:
        raise AddressError(text)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and rest[0] != ":") or ":" not in host:
            raise AddressError(text, "bad bracketed address")
        ip = _ip_fast(host)
        if ip is None:
            if "%" in host:
                _check_zone(host)
            ip = parse_ip(host)
        return Node(ip, _parse_node_port(rest[1:], text) if rest else None)
    colons = text.count(":")
    if colons > 1:  # a bare IPv6 address: every colon is the address's
        ip = _ip_fast(text)
        if ip is None:
            if "%" in text:
                _check_zone(text)
            ip = parse_ip(text)
        return Node(ip)
    name, sep, port_text = text.partition(":")
    port = _parse_node_port(port_text, text) if sep else None
    if name.lower() == "unknown":
        return Node(None, port, "unknown")
    if name.startswith("_"):
        if len(name) > MAX_HOST_PORT_LENGTH or not _OBFUSCATED.match(name):
            raise AddressError(text, "bad obfuscated identifier")
        return Node(None, port, name)
    ip = _ip_fast(name)
    if ip is None:
        ip = parse_ip(name)  # the careful path, for its error message; no colon: never IPv6
    return Node(ip, port)


def _parse_node_port(text: str, whole: str) -> int | str:
    if text.startswith("_"):
        if len(text) > MAX_HOST_PORT_LENGTH or not _OBFUSCATED.match(text):
            raise AddressError(whole, "bad obfuscated port")
        return text
    if not (1 <= len(text) <= 5 and text.isascii() and text.isdigit()) or int(text) > 65535:
        raise AddressError(whole, "bad port")
    return int(text)


def _malformed(text: str, why: str) -> ForwardedElement:
    return ForwardedElement(error=f"malformed element {snippet(text.strip(_OWS))}: {why}")


def parse_forwarded_element(text: str) -> ForwardedElement:
    """Parse one element (the text between two commas, already isolated).

    Never raises for ``str`` input: problems make a malformed element.
    """
    if not text.strip(_OWS):
        return ForwardedElement(error="empty element")
    pos = 0
    end = len(text)
    seen: dict[str, str] = {}
    while pos < end:
        match = _PAIR.match(text, pos)
        if match is None:
            return _malformed(text, "bad syntax")
        name = match[1]
        if name is not None:
            name = name.lower()
            if name in seen:
                return _malformed(text, f"{name}= given twice")
            if len(seen) >= _MAX_PAIRS:
                return _malformed(text, "too many parameters")
            quoted = match[3]
            if quoted is None:
                seen[name] = match[2]
            else:
                seen[name] = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
        if not match[4]:  # matched up to the end
            break
        pos = match.end()
    for_ = by = None
    try:
        value = seen.get("for")
        if value is not None:
            for_ = parse_node(value)
        value = seen.get("by")
        if value is not None:
            by = parse_node(value)
    except AddressError as exc:
        return _malformed(text, f"bad node {snippet(exc.text)}: {exc.why}")
    proto = seen.get("proto")
    if proto is not None:
        proto = parse_proto(proto)
    host = seen.get("host")
    if host is not None:
        host = parse_host(host)
    return ForwardedElement(for_, by, proto, host)


def parse_proto(text: str) -> str | None:
    """A URI scheme (RFC 3986: a letter, then letters, digits, ``+-.``; at most 32), lower-cased, else ``None``.

    For ``Forwarded`` ``proto=`` and ``X-Forwarded-Proto`` entries. Nothing is
    trimmed: surrounding spaces make it invalid.
    """
    if not text.isascii():  # "\u212a".lower() is "k": check before lower-casing
        return None
    proto = text.lower()
    return proto if _SCHEME.match(proto) else None


def parse_host(text: str) -> str | None:
    """``host[":" port]`` as proxies forward it, lower-cased, else ``None``.

    For ``Forwarded`` ``host=`` and ``X-Forwarded-Host`` entries. The host is a name
    of letters, digits, ``-``, ``.`` and ``_`` (at most 253), or a bracketed IPv6
    literal; the port 0-65535. Stricter than RFC 3986 reg-name, as Django's host
    validation is: no sub-delims (``'()*;=...``), no percent-encoding, no userinfo,
    nothing that means something to a shell, SQL or HTML. Nothing is trimmed.
    """
    if not text.isascii():  # "\u212a".lower() is "k": check before lower-casing
        return None
    host = text.lower()
    match = _HOST.match(host)
    if match is None:
        return None
    if match[2] is not None:
        try:
            IPv6Address(match[2])
        except ValueError:
            return None
    if match[3] is not None and int(match[3]) > 65535:
        return None
    return host


@dataclass(frozen=True, slots=True)
class Cut:
    """Where :func:`rsplit_forwarded` stopped reading a capped header: nothing left of it is read."""

    reason: str


def rsplit_forwarded(value: str, limit: int = MAX_ENTRIES) -> Iterator[str | Cut]:
    """Split a ``Forwarded`` value into element texts, lazily, **rightmost first**.

    Yields at most ``limit`` texts (untrimmed, unparsed), then a :class:`Cut` if the
    header goes on to the left beyond ``limit`` elements or :data:`MAX_HEADER_LENGTH`
    characters. A walk that stops early never scans the rest, so whatever a client
    piled up on the left costs nothing. An empty or blank value yields nothing.

    Element boundaries are commas outside quoted strings, found scanning right to left
    (see the module docstring for why). Inside a quoted string a ``"`` preceded by an
    odd number of backslashes is escaped; read from the right, that rule gives the same
    boundaries as a left-to-right parse for every well-formed value. A quoted string
    that never opens makes the rest of the value one text, which then parses as
    malformed; it cannot reach across to the right.
    """
    n = len(value)
    floor = n - MAX_HEADER_LENGTH if n > MAX_HEADER_LENGTH else 0
    if not floor and not value.strip(_OWS):
        return
    if '"' not in value:  # the common case: nothing quoted, every comma is a boundary
        texts = value[floor:].rsplit(",", limit) if floor else value.rsplit(",", limit)
        for i in range(len(texts) - 1, 0, -1):
            yield texts[i]
        if len(texts) > limit:
            yield Cut(f"more than {limit} elements")
        elif floor:  # texts[0] is the partial element at the cut
            yield Cut(f"header longer than {MAX_HEADER_LENGTH} characters")
        else:
            yield texts[0]
        return
    escapes = "\\" in value
    count = 0
    end = pos = n
    comma = quote = n  # cached rfind results, valid while < pos
    while True:
        if comma >= pos:
            comma = value.rfind(",", floor, pos)
        if quote >= pos:
            quote = value.rfind('"', floor, pos)
        if quote > comma:
            # A quoted string closes at `quote`: commas inside it are not boundaries.
            opening = _opening_quote(value, floor, quote, escapes)
            if opening >= 0:
                pos = opening
                continue
            comma = -1  # never opened: everything left of `end` is one element
        if count == limit:
            yield Cut(f"more than {limit} elements")
            return
        if comma < 0:
            if floor:  # the element runs past the cut
                yield Cut(f"header longer than {MAX_HEADER_LENGTH} characters")
            else:
                yield value[:end]
            return
        yield value[comma + 1 : end]
        count += 1
        end = pos = comma


def _opening_quote(value: str, floor: int, closing: int, escapes: bool) -> int:
    """Index of the quote that opens the quoted string closed at ``closing``, or -1."""
    i = closing
    while True:
        q = value.rfind('"', floor, i)
        if q < 0 or not escapes:
            return q
        j = q
        while j > floor and value[j - 1] == "\\":
            j -= 1
        if (q - j) % 2 == 0:
            return q
        i = q  # an escaped quote inside the string: keep looking left


def parse_forwarded(value: str) -> list[ForwardedElement]:
    """Parse an RFC 7239 ``Forwarded`` value (all instances joined with ``","``).

    Returns the elements in header order. Parameter names are case-insensitive;
    values are tokens or quoted strings with backslash escapes (commas and semicolons
    inside quotes do not split). Malformed elements are kept in place (see
    :class:`ForwardedElement`). At most the last :data:`MAX_ENTRIES` elements within
    the last :data:`MAX_HEADER_LENGTH` characters are parsed; if more was there, the
    first element returned is a malformed one saying so.

    Never raises for ``str`` input.
    """
    elements = [
        parse_forwarded_element(text) if isinstance(text, str) else ForwardedElement(error=text.reason)
        for text in rsplit_forwarded(value)
    ]
    elements.reverse()
    return elements
