"""HAProxy's PROXY protocol, versions 1 (text) and 2 (binary), sans-I/O.

A proxy in front of the server (HAProxy, nginx ``proxy_protocol``, AWS NLB,
Azure Private Link, GCP Private Service Connect, stunnel, ...) writes one
header at the very start of the TCP connection saying who the client is. This
module turns bytes into a :class:`ProxyHeader`; it never touches a socket.

Trust: the header is believed **by configuration, never by detection**. A
listener either requires the header on every connection or never reads one,
and only peers on an allow-list may connect to such a listener; a receiver
that guessed whether a header is present would let any client forge its
address (spec, section 5). Nothing here checks the peer: that is the caller's
job, before the first byte is fed.

Failure: :class:`ProxyProtocolError` means the connection must be closed
without passing anything on to the application. The parser fails as early as
the bytes allow (a wrong first byte is enough) so that a misconfigured sender
notices at once. It does not time out: the caller closes connections whose
header has not arrived within a few seconds (the spec says at least 3).

Usage, with the bytes of a connection as they arrive::

    reader = ProxyProtocolReader()
    header = None
    while header is None:
        data = recv()                    # under a deadline of a few seconds
        if not data:                     # EOF before a whole header
            close()
        header = reader.feed(data)       # ProxyProtocolError: close()
    stream_start = reader.rest           # the first bytes of the HTTP stream
    client = header.client               # None: use the socket's own peer

Choices made where the spec leaves room:

* **No client** (``source is None``): v2 ``LOCAL`` (a proxy's own health
  check), v1 ``UNKNOWN``, and v2 ``PROXY`` with the ``UNSPEC`` or ``AF_UNIX``
  families. In all of them the socket's own addresses apply. ``command`` is
  ``"local"`` for v2 ``LOCAL`` and for v1 ``UNKNOWN`` (its meaning, per the
  spec, is "use the real connection's parameters"); :attr:`ProxyHeader.v1_unknown`
  tells the two apart.
* **IPv4-mapped addresses** (HAProxy sends ``::ffff:a.b.c.d`` in a ``TCP6``
  header when one side of a dual-stack proxy is IPv4): :attr:`ProxyHeader.source`
  keeps the address exactly as sent; :attr:`ProxyHeader.client` unmaps it, as
  the rest of realip does with socket peers.
* **Strict where the spec defines a format**: the v2 address block must fit
  in the declared length, TLVs must tile the rest exactly, a CRC32C TLV must be
  4 bytes and match, ``UNIQUE_ID`` is at most 128 bytes, ``AUTHORITY`` at most
  255 bytes of UTF-8 (HAProxy's limit), ``SSL`` must hold its 5-byte prefix
  and well-formed sub-TLVs with US-ASCII/UTF-8 strings, ``NETNS`` is US-ASCII,
  and none of these may appear twice (two answers to one question invite two
  readers to disagree). The same rules hold for ``LOCAL`` headers.
* **Lenient where it does not**: unknown TLV types are kept raw. The vendor
  types (0xE0 GCP, 0xEA AWS, 0xEE Azure) sit in the spec's custom range where
  other senders may use the same numbers, so they are not validated: their
  accessors return ``None`` when the value has the wrong shape. ``NOOP``
  (padding) is skipped and does not appear in :attr:`ProxyHeader.tlvs`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from socket import inet_aton
from typing import Final, Literal, TypeAlias

from .address import IPAddress, unmap
from .errors import ConfigError

__all__ = [
    "DEFAULT_MAX_V2_LENGTH",
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_AWS",
    "PP2_TYPE_AZURE",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_GCP",
    "PP2_TYPE_NETNS",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_SSL",
    "PP2_TYPE_UNIQUE_ID",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "Command",
    "Family",
    "ProxyHeader",
    "ProxyProtocolError",
    "ProxyProtocolReader",
    "SSLInfo",
    "crc32c",
    "parse",
]

Command: TypeAlias = Literal["proxy", "local"]
Family: TypeAlias = Literal["unspec", "tcp4", "udp4", "tcp6", "udp6", "unix", "unix_dgram"]
TLV: TypeAlias = "tuple[int, bytes]"

#: Longest v1 line including CRLF: ``PROXY UNKNOWN`` with two full IPv6
#: addresses and two 5-digit ports (spec, section 2.1).
V1_MAX_LENGTH: Final = 107
V1_PREFIX: Final = b"PROXY "
#: The 12 bytes every v2 header starts with.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Signature, version/command, family/protocol, 16-bit length.
V2_FIXED_LENGTH: Final = 16
#: Default cap on a whole v2 header (16 + length field). HAProxy's own
#: headers with every TLV enabled stay well under 1 KiB; the field allows
#: 64 KiB, which a receiver has no reason to buffer.
DEFAULT_MAX_V2_LENGTH: Final = 4096
_V2_LENGTH_LIMIT: Final = V2_FIXED_LENGTH + 0xFFFF
_BOTH_VERSIONS: Final = (1, 2)

PP2_TYPE_ALPN: Final = 0x01
PP2_TYPE_AUTHORITY: Final = 0x02
PP2_TYPE_CRC32C: Final = 0x03
PP2_TYPE_NOOP: Final = 0x04
PP2_TYPE_UNIQUE_ID: Final = 0x05
PP2_TYPE_SSL: Final = 0x20
PP2_SUBTYPE_SSL_VERSION: Final = 0x21
PP2_SUBTYPE_SSL_CN: Final = 0x22
PP2_SUBTYPE_SSL_CIPHER: Final = 0x23
PP2_SUBTYPE_SSL_SIG_ALG: Final = 0x24
PP2_SUBTYPE_SSL_KEY_ALG: Final = 0x25
PP2_TYPE_NETNS: Final = 0x30
#: Google Cloud Private Service Connect: 8-byte connection id, network order.
PP2_TYPE_GCP: Final = 0xE0
#: AWS (PrivateLink / NLB): subtype 0x01, then the VPC endpoint id in ASCII.
PP2_TYPE_AWS: Final = 0xEA
#: Azure Private Link: subtype 0x01, then the LINKID, uint32 little-endian.
PP2_TYPE_AZURE: Final = 0xEE
_PP2_SUBTYPE_AWS_VPCE_ID: Final = 0x01
_PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID: Final = 0x01

PP2_CLIENT_SSL: Final = 0x01
PP2_CLIENT_CERT_CONN: Final = 0x02
PP2_CLIENT_CERT_SESS: Final = 0x04

_UNIQUE_ID_MAX: Final = 128
_AUTHORITY_MAX: Final = 255
#: Types the spec gives a single meaning; a second copy is an error.
_SINGLE_TLVS: Final = frozenset(
    {PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID, PP2_TYPE_SSL, PP2_TYPE_NETNS}
)
_SSL_STRINGS: Final = {
    PP2_SUBTYPE_SSL_VERSION: "ascii",
    PP2_SUBTYPE_SSL_CN: "utf-8",
    PP2_SUBTYPE_SSL_CIPHER: "ascii",
    PP2_SUBTYPE_SSL_SIG_ALG: "ascii",
    PP2_SUBTYPE_SSL_KEY_ALG: "ascii",
}

#: Family/protocol byte -> (family, size of the address block).
_V2_FAMILIES: Final[dict[int, tuple[Family, int]]] = {
    0x00: ("unspec", 0),
    0x11: ("tcp4", 12),
    0x12: ("udp4", 12),
    0x21: ("tcp6", 36),
    0x22: ("udp6", 36),
    0x31: ("unix", 216),
    0x32: ("unix_dgram", 216),
}


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header: close the connection.

    The message is safe to log: it quotes at most a short ``repr`` of the
    offending bytes.
    """


def _show(data: bytes | bytearray, limit: int = 24) -> str:
    shown = repr(bytes(data[:limit]))
    return shown + "..." if len(data) > limit else shown


# --- CRC32C (Castagnoli), RFC 4960 appendix B --------------------------------


def _crc32c_tables() -> tuple[tuple[int, ...], ...]:
    # Reflected polynomial 0x1EDC6F41. Tables 1-3 extend table 0 by one, two
    # and three zero bytes, so that four bytes are folded in per step
    # ("slicing-by-4"): a third faster than a byte at a time in CPython.
    first = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        first.append(crc)
    tables = [tuple(first)]
    for _ in range(3):
        prev = tables[-1]
        tables.append(tuple((prev[n] >> 8) ^ first[prev[n] & 0xFF] for n in range(256)))
    return tuple(tables)


_T0, _T1, _T2, _T3 = _crc32c_tables()
_WORDS: Final = struct.Struct("<I")


def _crc32c_update(crc: int, data: bytes | bytearray | memoryview) -> int:
    t0, t1, t2, t3 = _T0, _T1, _T2, _T3
    whole = len(data) & ~3
    view = memoryview(data)
    for (word,) in _WORDS.iter_unpack(view[:whole]):
        crc ^= word
        crc = t3[crc & 0xFF] ^ t2[(crc >> 8) & 0xFF] ^ t1[(crc >> 16) & 0xFF] ^ t0[crc >> 24]
    for byte in view[whole:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, as the v2 ``CRC32C`` TLV carries it.

    Pass an earlier result as ``value`` to continue a checksum over data given
    in pieces: ``crc32c(b, crc32c(a)) == crc32c(a + b)``.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    return _crc32c_update(value ^ 0xFFFFFFFF, data) ^ 0xFFFFFFFF


# --- the result ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSLInfo:
    """The v2 ``SSL`` TLV: how the client reached the proxy.

    ``client`` is the spec's bit field (``PP2_CLIENT_*``); ``verify`` is zero
    when a client certificate was presented *and* verified. HAProxy also sends
    zero when no certificate was presented, so only trust
    :attr:`client_cert_verified`, which checks both.
    """

    client: int
    verify: int
    #: Sub-TLVs in order, raw (known string ones are also decoded below).
    sub_tlvs: tuple[TLV, ...] = ()

    @property
    def client_ssl(self) -> bool:
        """The client connected over SSL/TLS."""
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def client_cert_conn(self) -> bool:
        """The client presented a certificate on this connection."""
        return bool(self.client & PP2_CLIENT_CERT_CONN)

    @property
    def client_cert_sess(self) -> bool:
        """The client presented a certificate at least once in this TLS session."""
        return bool(self.client & PP2_CLIENT_CERT_SESS)

    @property
    def client_cert_verified(self) -> bool:
        """A client certificate was presented and the proxy verified it."""
        return self.verify == 0 and bool(self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS))

    def _string(self, subtype: int) -> str | None:
        for kind, value in self.sub_tlvs:
            if kind == subtype:
                return value.decode(_SSL_STRINGS[subtype])
        return None

    @property
    def version(self) -> str | None:
        """TLS version, e.g. ``"TLSv1.3"``."""
        return self._string(PP2_SUBTYPE_SSL_VERSION)

    @property
    def cn(self) -> str | None:
        """Common Name of the client certificate's subject."""
        return self._string(PP2_SUBTYPE_SSL_CN)

    @property
    def cipher(self) -> str | None:
        """Cipher name, e.g. ``"ECDHE-RSA-AES128-GCM-SHA256"``."""
        return self._string(PP2_SUBTYPE_SSL_CIPHER)

    @property
    def sig_alg(self) -> str | None:
        """Signature algorithm of the proxy's own certificate, e.g. ``"RSA-SHA256"``."""
        return self._string(PP2_SUBTYPE_SSL_SIG_ALG)

    @property
    def key_alg(self) -> str | None:
        """Key algorithm of the proxy's own certificate, e.g. ``"RSA2048"``."""
        return self._string(PP2_SUBTYPE_SSL_KEY_ALG)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    ``source`` and ``destination`` are set only for ``command == "proxy"``
    with an IP family (tcp4/tcp6/udp4/udp6); otherwise the socket's own
    addresses apply. They hold addresses exactly as sent (a mapped
    ``::ffff:a.b.c.d`` stays IPv6); :attr:`client` gives the normalised one.
    """

    version: Literal[1, 2]
    command: Command
    #: As declared. For ``LOCAL`` it is reported but carries no addresses.
    family: Family
    source: tuple[IPAddress, int] | None = None
    destination: tuple[IPAddress, int] | None = None
    #: v2 TLVs in order, raw, without ``NOOP`` padding. Always empty for v1.
    tlvs: tuple[TLV, ...] = ()

    @property
    def client(self) -> tuple[IPAddress, int] | None:
        """The client's address (IPv4-mapped unwrapped) and port, or ``None``."""
        if self.source is None:
            return None
        ip, port = self.source
        return unmap(ip), port

    @property
    def v1_unknown(self) -> bool:
        """A v1 ``PROXY UNKNOWN`` line (as opposed to a v2 ``LOCAL`` header)."""
        return self.version == 1 and self.command == "local"

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, raw, or ``None``."""
        for found, value in self.tlvs:
            if found == kind:
                return value
        return None

    @property
    def alpn(self) -> bytes | None:
        """The ALPN protocol the client negotiated with the proxy, e.g. ``b"h2"``."""
        return self.tlv(PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        """The host name the client asked for (TLS SNI, typically)."""
        value = self.tlv(PP2_TYPE_AUTHORITY)
        return None if value is None else value.decode("utf-8")

    @property
    def crc32c_verified(self) -> bool:
        """The header carried a CRC32C checksum, and it matched (a wrong one fails the parse)."""
        return self.tlv(PP2_TYPE_CRC32C) is not None

    @property
    def unique_id(self) -> bytes | None:
        """The proxy's opaque connection id (at most 128 bytes)."""
        return self.tlv(PP2_TYPE_UNIQUE_ID)

    @property
    def netns(self) -> str | None:
        """The network namespace the proxy received the connection in."""
        value = self.tlv(PP2_TYPE_NETNS)
        return None if value is None else value.decode("ascii")

    @property
    def ssl(self) -> SSLInfo | None:
        """The ``SSL`` TLV: whether the client used TLS, its version, client certificate..."""
        value = self.tlv(PP2_TYPE_SSL)
        return None if value is None else _parse_ssl(value)

    @property
    def aws_vpce_id(self) -> str | None:
        """AWS VPC endpoint id (``"vpce-..."``), from TLV 0xEA subtype 0x01."""
        value = self.tlv(PP2_TYPE_AWS)
        if value is None or len(value) < 2 or value[0] != _PP2_SUBTYPE_AWS_VPCE_ID or not value.isascii():
            return None
        return value[1:].decode("ascii")

    @property
    def azure_link_id(self) -> int | None:
        """Azure Private Link ``LINKID`` of the private endpoint (TLV 0xEE subtype 0x01)."""
        value = self.tlv(PP2_TYPE_AZURE)
        if value is None or len(value) != 5 or value[0] != _PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID:
            return None
        return int.from_bytes(value[1:], "little")

    @property
    def gcp_psc_connection_id(self) -> int | None:
        """Google Cloud Private Service Connect ``pscConnectionId`` (TLV 0xE0)."""
        value = self.tlv(PP2_TYPE_GCP)
        if value is None or len(value) != 8:
            return None
        return int.from_bytes(value, "big")


_V1_UNKNOWN: Final = ProxyHeader(version=1, command="local", family="unspec")


_INET: Final = struct.Struct("!IIHH")
_INET6: Final = struct.Struct("!16s16sHH")


# --- the reader ------------------------------------------------------------------


def _check_config(versions: Collection[int], max_v2_length: int) -> tuple[bool, bool, int]:
    if versions is _BOTH_VERSIONS and max_v2_length == DEFAULT_MAX_V2_LENGTH and type(max_v2_length) is int:
        return True, True, DEFAULT_MAX_V2_LENGTH  # the defaults: skip the checks below (parse() runs this each time)
    if isinstance(versions, (str, bytes)) or not isinstance(versions, Collection):
        raise ConfigError("proxy_protocol versions", versions, "expected a collection of 1 and/or 2")
    if not versions or any(v not in (1, 2) or isinstance(v, bool) for v in versions):
        raise ConfigError("proxy_protocol versions", versions, "expected a non-empty collection of 1 and/or 2")
    if (
        not isinstance(max_v2_length, int)
        or isinstance(max_v2_length, bool)
        or not V2_FIXED_LENGTH <= max_v2_length <= _V2_LENGTH_LIMIT
    ):
        raise ConfigError(
            "max_v2_length", max_v2_length, f"expected an integer from {V2_FIXED_LENGTH} to {_V2_LENGTH_LIMIT}"
        )
    return 1 in versions, 2 in versions, max_v2_length


def parse(
    data: bytes | bytearray | memoryview,
    *,
    versions: Collection[int] = _BOTH_VERSIONS,
    max_v2_length: int = DEFAULT_MAX_V2_LENGTH,
) -> tuple[ProxyHeader, int] | None:
    """Parse the header at the start of ``data``, all at once.

    Returns the header and its length in bytes (``data[length:]`` is the start
    of the application stream), or ``None`` when ``data`` is a valid but
    incomplete beginning of a header: the same "need more data" answer as
    :meth:`ProxyProtocolReader.feed`. Raises :class:`ProxyProtocolError` as
    soon as ``data`` cannot be the beginning of a valid header.

    ``versions`` lists the versions this listener accepts; ``max_v2_length``
    caps a whole v2 header (see :class:`ProxyProtocolReader`).
    """
    accept_v1, accept_v2, max_length = _check_config(versions, max_v2_length)
    if isinstance(data, memoryview):
        data = data.tobytes()
    return _parse(data, accept_v1, accept_v2, max_length)


class ProxyProtocolReader:
    """Reads the PROXY header off the start of one connection, fed in pieces.

    ``versions`` is what the listener accepts: (1, 2) by default; receivers of
    v2 are encouraged to take v1 as well. ``max_v2_length`` caps the whole v2
    header (16 + its length field; default :data:`DEFAULT_MAX_V2_LENGTH`): a
    longer one is rejected as soon as its length field arrives, so a
    connection never makes the reader buffer more than that. v1 lines are
    capped at 107 bytes by the spec.

    Bad configuration raises :class:`~realip.ConfigError` here, not per
    connection.
    """

    __slots__ = ("_accept_v1", "_accept_v2", "_buffer", "_error", "_header", "_max_v2_length", "_rest")

    def __init__(
        self, *, versions: Collection[int] = _BOTH_VERSIONS, max_v2_length: int = DEFAULT_MAX_V2_LENGTH
    ) -> None:
        self._accept_v1, self._accept_v2, self._max_v2_length = _check_config(versions, max_v2_length)
        self._buffer = bytearray()
        self._header: ProxyHeader | None = None
        self._rest = b""
        self._error: str | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> ProxyHeader | None:
        """Add the next bytes of the connection.

        Returns the header once it is complete, ``None`` while more bytes are
        needed. Raises :class:`ProxyProtocolError` when the bytes so far cannot
        begin a valid header (and again on every later call). After the header
        was returned, the bytes that followed it are in :attr:`rest` and
        feeding more is an error: they belong to the application.
        """
        if self._header is not None:
            raise RuntimeError("the PROXY header was already read; later bytes belong to the application")
        if self._error is not None:
            raise ProxyProtocolError(self._error)
        if not data:
            return None
        buf: bytes | bytearray
        if self._buffer:
            self._buffer += data
            buf = self._buffer
        else:
            buf = data.tobytes() if isinstance(data, memoryview) else data
        try:
            result = _parse(buf, self._accept_v1, self._accept_v2, self._max_v2_length)
        except ProxyProtocolError as exc:
            self._error = str(exc)
            self._buffer = bytearray()
            raise
        if result is None:
            if buf is not self._buffer:
                self._buffer += buf
            return None
        header, length = result
        self._rest = bytes(buf[length:])
        self._buffer = bytearray()
        self._header = header
        return header

    @property
    def rest(self) -> bytes:
        """The bytes that followed the header: the start of the application stream."""
        if self._header is None:
            raise RuntimeError("no PROXY header has been read yet")
        return self._rest


# --- the grammar --------------------------------------------------------------


def _parse(
    buf: bytes | bytearray, accept_v1: bool, accept_v2: bool, max_v2_length: int
) -> tuple[ProxyHeader, int] | None:
    if not buf:
        return None
    first = buf[0]
    if first == 0x50 and accept_v1:  # "P"
        n = min(len(buf), len(V1_PREFIX))
        if buf[:n] != V1_PREFIX[:n]:
            raise ProxyProtocolError(f"PROXY protocol: bad v1 signature: {_show(buf)}")
        return _parse_v1(buf)
    if first == 0x0D and accept_v2:
        n = min(len(buf), len(V2_SIGNATURE))
        if buf[:n] != V2_SIGNATURE[:n]:
            raise ProxyProtocolError(f"PROXY protocol: bad v2 signature: {_show(buf)}")
        return _parse_v2(buf, max_v2_length)
    wanted = " or ".join(v for v, ok in (("v1", accept_v1), ("v2", accept_v2)) if ok)
    raise ProxyProtocolError(f"PROXY protocol: expected a {wanted} header, got {_show(buf)}")


# v1 --------------------------------------------------------------------------

_V1_LINE_END: Final = re.compile(rb"[\r\n]")
_V1_PROTOCOLS: Final = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ")
_V1_FIELD_BYTES: Final = {b"TCP4 ": b"0123456789. ", b"TCP6 ": b"0123456789abcdefABCDEF:. "}
# Decimal, no leading zeros ("avoid any possible confusion with octal").
_V1_IPV4: Final = re.compile(
    rb"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_V1_IPV6: Final = re.compile(rb"[0-9A-Fa-f:.]{2,45}")
_V1_PORT: Final = re.compile(rb"0|[1-9][0-9]{0,4}")


def _parse_v1(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | None:
    # The line ends at the first CR or LF, and CR LF is the only valid ending.
    # With CRLF included the line is at most 107 bytes: the CR is at index <= 105.
    end = _V1_LINE_END.search(buf, 0, V1_MAX_LENGTH - 1)
    if end is None:
        if len(buf) >= V1_MAX_LENGTH - 1:
            raise ProxyProtocolError(f"PROXY protocol: v1 line without CRLF in {V1_MAX_LENGTH} bytes: {_show(buf)}")
        _check_v1_prefix(buf)
        return None
    at = end.start()
    if buf[at] == 0x0A:
        raise ProxyProtocolError(f"PROXY protocol: v1 line ends with LF, not CRLF: {_show(buf[: at + 1], 60)}")
    if at + 1 == len(buf):
        _check_v1_prefix(buf[:at])
        return None
    if buf[at + 1] != 0x0A:
        raise ProxyProtocolError(f"PROXY protocol: v1 line ends with CR, not CRLF: {_show(buf[: at + 2], 60)}")
    return _parse_v1_line(bytes(buf[:at])), at + 2


def _check_v1_prefix(line: bytes | bytearray) -> None:
    """Fail early on an incomplete line that no ending can make valid."""
    protocol = line[len(V1_PREFIX) :]
    if not protocol:
        return
    for known in _V1_PROTOCOLS:
        if protocol[: len(known)] == known[: len(protocol)]:
            break
    else:
        raise ProxyProtocolError(f"PROXY protocol: bad v1 protocol (TCP4, TCP6 or UNKNOWN): {_show(line, 60)}")
    allowed = _V1_FIELD_BYTES.get(known)
    if allowed is None or len(protocol) <= len(known):
        return  # UNKNOWN: anything up to CRLF is ignored
    fields = protocol[len(known) :]
    if fields.translate(None, allowed) or b"  " in fields or fields.startswith(b" ") or fields.count(b" ") > 3:
        raise ProxyProtocolError(f"PROXY protocol: malformed v1 line: {_show(line, 60)}")


def _parse_v1_line(line: bytes) -> ProxyHeader:
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        return _V1_UNKNOWN
    parts = line.split(b" ")
    if len(parts) != 6 or parts[0] != b"PROXY" or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"PROXY protocol: malformed v1 line: {_show(line, 60)}")
    v4 = parts[1] == b"TCP4"
    source = (_v1_address(parts[2], v4, line), _v1_port(parts[4], line))
    destination = (_v1_address(parts[3], v4, line), _v1_port(parts[5], line))
    return ProxyHeader(1, "proxy", "tcp4" if v4 else "tcp6", source, destination)


def _v1_address(text: bytes, v4: bool, line: bytes) -> IPAddress:
    try:
        if v4:
            if _V1_IPV4.fullmatch(text):
                # The regex admits only canonical dotted quads, which every
                # inet_aton reads the same way; it is 5x faster than ipaddress.
                return IPv4Address(inet_aton(text.decode("ascii")))
        elif _V1_IPV6.fullmatch(text):
            return IPv6Address(text.decode("ascii"))
    except ValueError:
        pass
    family = "TCP4" if v4 else "TCP6"
    raise ProxyProtocolError(f"PROXY protocol: bad {family} address {_show(text, 48)} in v1 line: {_show(line, 60)}")


def _v1_port(text: bytes, line: bytes) -> int:
    if _V1_PORT.fullmatch(text):
        port = int(text)
        if port <= 0xFFFF:
            return port
    raise ProxyProtocolError(f"PROXY protocol: bad port {_show(text, 12)} in v1 line: {_show(line, 60)}")


# v2 --------------------------------------------------------------------------


def _parse_v2(buf: bytes | bytearray, max_length: int) -> tuple[ProxyHeader, int] | None:
    available = len(buf)
    if available <= 12:
        return None
    version_command = buf[12]
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY protocol: v2 header with version {version_command >> 4}, expected 2")
    command_code = version_command & 0x0F
    if command_code > 1:
        raise ProxyProtocolError(f"PROXY protocol: v2 header with unknown command {command_code:#x}")
    if available <= 13:
        return None
    family_byte = buf[13]
    known = _V2_FAMILIES.get(family_byte)
    if known is None:
        raise ProxyProtocolError(f"PROXY protocol: v2 header with unknown family/protocol {family_byte:#04x}")
    family, address_length = known
    if available < V2_FIXED_LENGTH:
        return None
    length = (buf[14] << 8) | buf[15]
    total = V2_FIXED_LENGTH + length
    if total > max_length:
        raise ProxyProtocolError(f"PROXY protocol: v2 header of {total} bytes, over the {max_length}-byte limit")
    if length < address_length:
        raise ProxyProtocolError(
            f"PROXY protocol: v2 length {length} is too short for the {family} address block ({address_length} bytes)"
        )
    if available < total:
        return None

    command: Command = "proxy" if command_code else "local"
    source: tuple[IPAddress, int] | None = None
    destination: tuple[IPAddress, int] | None = None
    if command_code and address_length == 12:
        src4, dst4, src_port, dst_port = _INET.unpack_from(buf, V2_FIXED_LENGTH)
        source = (IPv4Address(src4), src_port)
        destination = (IPv4Address(dst4), dst_port)
    elif command_code and address_length == 36:
        src6, dst6, src_port, dst_port = _INET6.unpack_from(buf, V2_FIXED_LENGTH)
        source = (IPv6Address(src6), src_port)
        destination = (IPv6Address(dst6), dst_port)

    tlvs = _parse_tlvs(buf, V2_FIXED_LENGTH + address_length, total) if length > address_length else ()
    return ProxyHeader(2, command, family, source, destination, tlvs), total


def _parse_tlvs(buf: bytes | bytearray, at: int, end: int) -> tuple[TLV, ...]:
    tlvs: list[TLV] = []
    seen: set[int] = set()
    checksum_at = -1
    while at < end:
        if end - at < 3:
            raise ProxyProtocolError(f"PROXY protocol: truncated TLV at byte {at} of a {end}-byte v2 header")
        kind = buf[at]
        value_at = at + 3
        at = value_at + ((buf[at + 1] << 8) | buf[at + 2])
        if at > end:
            raise ProxyProtocolError(f"PROXY protocol: TLV {kind:#04x} overruns the {end}-byte v2 header")
        if kind == PP2_TYPE_NOOP:
            continue
        value = bytes(buf[value_at:at])
        if kind in _SINGLE_TLVS:
            if kind in seen:
                raise ProxyProtocolError(f"PROXY protocol: TLV {kind:#04x} appears twice")
            seen.add(kind)
            if kind == PP2_TYPE_CRC32C:
                if len(value) != 4:
                    raise ProxyProtocolError(f"PROXY protocol: CRC32C TLV of {len(value)} bytes, expected 4")
                checksum_at = value_at
            else:
                _check_tlv(kind, value)
        tlvs.append((kind, value))
    if checksum_at >= 0:
        expected = int.from_bytes(buf[checksum_at : checksum_at + 4], "big")
        zeroed = bytearray(buf[:end])
        zeroed[checksum_at : checksum_at + 4] = b"\0\0\0\0"
        crc = _crc32c_update(0xFFFFFFFF, zeroed) ^ 0xFFFFFFFF
        if crc != expected:
            raise ProxyProtocolError(
                f"PROXY protocol: CRC32C mismatch: header says {expected:#010x}, computed {crc:#010x}"
            )
    return tuple(tlvs)


def _check_tlv(kind: int, value: bytes) -> None:
    if kind == PP2_TYPE_AUTHORITY:
        if len(value) > _AUTHORITY_MAX:
            raise ProxyProtocolError(f"PROXY protocol: AUTHORITY TLV of {len(value)} bytes, over {_AUTHORITY_MAX}")
        _decode(value, "utf-8", "AUTHORITY TLV")
    elif kind == PP2_TYPE_UNIQUE_ID:
        if len(value) > _UNIQUE_ID_MAX:
            raise ProxyProtocolError(f"PROXY protocol: UNIQUE_ID TLV of {len(value)} bytes, over {_UNIQUE_ID_MAX}")
    elif kind == PP2_TYPE_SSL:
        _parse_ssl(value)
    elif kind == PP2_TYPE_NETNS:
        _decode(value, "ascii", "NETNS TLV")


def _decode(value: bytes, encoding: str, what: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY protocol: {what} is not {encoding}: {_show(value)}") from None


def _parse_ssl(value: bytes) -> SSLInfo:
    if len(value) < 5:
        raise ProxyProtocolError(f"PROXY protocol: SSL TLV of {len(value)} bytes, expected at least 5")
    subs: list[TLV] = []
    seen: set[int] = set()
    at, end = 5, len(value)
    while at < end:
        if end - at < 3:
            raise ProxyProtocolError("PROXY protocol: truncated sub-TLV in the SSL TLV")
        kind = value[at]
        value_at = at + 3
        at = value_at + ((value[at + 1] << 8) | value[at + 2])
        if at > end:
            raise ProxyProtocolError(f"PROXY protocol: SSL sub-TLV {kind:#04x} overruns the SSL TLV")
        sub = value[value_at:at]
        encoding = _SSL_STRINGS.get(kind)
        if encoding is not None:
            if kind in seen:
                raise ProxyProtocolError(f"PROXY protocol: SSL sub-TLV {kind:#04x} appears twice")
            seen.add(kind)
            _decode(sub, encoding, f"SSL sub-TLV {kind:#04x}")
        subs.append((kind, sub))
    return SSLInfo(value[0], int.from_bytes(value[1:5], "big"), tuple(subs))
