"""The PROXY protocol parser against HAProxy's spec (doc/proxy-protocol.txt).

The property tests build headers with an encoder written here, independently
of the parser (``struct`` for v2, f-strings for v1, a bit-at-a-time CRC32C),
and check that what the parser accepts round-trips, that any split of the
bytes gives the one-shot answer, and that nothing but ProxyProtocolError ever
escapes.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from realip import ConfigError
from realip.proxy_protocol import (
    DEFAULT_MAX_V2_LENGTH,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    ProxyProtocolReader,
    SSLInfo,
    crc32c,
    parse,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
assert SIG == V2_SIGNATURE

# --- an independent encoder -------------------------------------------------------


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C one bit at a time, straight from the definition (RFC 4960 B)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


FAMILY_BYTES = {
    "unspec": 0x00,
    "tcp4": 0x11,
    "udp4": 0x12,
    "tcp6": 0x21,
    "udp6": 0x22,
    "unix": 0x31,
    "unix_dgram": 0x32,
}
ADDRESS_BLOCK = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def encode_v2(
    header: ProxyHeader,
    *,
    noops: Sequence[tuple[int, bytes]] = (),
    filler: bytes = b"",
    version_command: int | None = None,
) -> bytes:
    """Bytes for ``header``: NOOPs inserted at the given TLV indexes, a CRC32C
    TLV (whatever its value in ``header``) filled in, ``filler`` as the address
    block of families whose addresses the header does not report."""
    family = FAMILY_BYTES[header.family]
    if header.source is not None:
        assert header.destination is not None
        (src, sport), (dst, dport) = header.source, header.destination
        block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    else:
        block = filler[: ADDRESS_BLOCK[family]].ljust(ADDRESS_BLOCK[family], b"\0")
    items = [tlv(kind, value) for kind, value in header.tlvs]
    for index, value in sorted(noops, key=lambda n: n[0], reverse=True):
        items.insert(min(index, len(items)), tlv(PP2_TYPE_NOOP, value))
    body = block
    crc_at = None
    for item in items:
        if item[0] == PP2_TYPE_CRC32C:
            item = tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")
            crc_at = 16 + len(body) + 3
        body += item
    vc = (0x21 if header.command == "proxy" else 0x20) if version_command is None else version_command
    data = SIG + struct.pack("!BBH", vc, family, len(body)) + body
    if crc_at is not None:
        data = data[:crc_at] + struct.pack("!I", crc32c_bitwise(data)) + data[crc_at + 4 :]
    return data


def encode_v1(header: ProxyHeader, *, style: str = "plain", unknown_tail: bytes = b"") -> bytes:
    if header.command == "local":
        return b"PROXY UNKNOWN" + unknown_tail + b"\r\n"
    assert header.source is not None and header.destination is not None
    (src, sport), (dst, dport) = header.source, header.destination
    proto = "TCP4" if header.family == "tcp4" else "TCP6"
    return f"PROXY {proto} {v6_text(src, style)} {v6_text(dst, style)} {sport} {dport}\r\n".encode()


def v6_text(ip: IPv4Address | IPv6Address, style: str) -> str:
    if ip.version == 4 or style == "plain":
        return str(ip)
    if style == "exploded":
        return ip.exploded
    if style == "upper":
        return str(ip).upper()
    # x:x:x:x:x:x:d.d.d.d (RFC 4291 2.2), valid for every IPv6 address
    return ":".join(f"{n:x}" for n in struct.unpack("!6H", ip.packed[:12])) + ":" + str(IPv4Address(ip.packed[12:]))


def with_crc_value(header: ProxyHeader, data: bytes) -> ProxyHeader:
    """``header`` with its CRC32C TLV value taken from the encoded bytes."""
    if not any(kind == PP2_TYPE_CRC32C for kind, _ in header.tlvs):
        return header
    at = _tlv_offset(data, PP2_TYPE_CRC32C)
    tlvs = tuple((k, data[at : at + 4] if k == PP2_TYPE_CRC32C else v) for k, v in header.tlvs)
    return dataclasses.replace(header, tlvs=tlvs)


def _tlv_offset(data: bytes, wanted: int) -> int:
    at = 16 + ADDRESS_BLOCK[data[13]]
    end = 16 + struct.unpack_from("!H", data, 14)[0]
    while at < end:
        kind, length = struct.unpack_from("!BH", data, at)
        if kind == wanted:
            return at + 3
        at += 3 + length
    raise AssertionError("TLV not found")


def reencode(header: ProxyHeader) -> bytes:
    return encode_v1(header) if header.version == 1 else encode_v2(header)


def without_crc_value(header: ProxyHeader) -> ProxyHeader:
    tlvs = tuple((k, b"" if k == PP2_TYPE_CRC32C else v) for k, v in header.tlvs)
    return dataclasses.replace(header, tlvs=tlvs)


# --- strategies ----------------------------------------------------------------------------

ports = st.integers(0, 65535)
no_crlf = st.binary(max_size=92).filter(lambda b: b"\r" not in b and b"\n" not in b)


@st.composite
def v1_cases(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    kind = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    if kind == "UNKNOWN":
        header = ProxyHeader(1, "local", "unspec")
        tail = draw(st.one_of(st.just(b""), no_crlf.map(lambda b: b" " + b[:91])))
        return encode_v1(header, unknown_tail=tail), header
    version: Literal[4, 6] = 4 if kind == "TCP4" else 6
    src, dst = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
    header = ProxyHeader(1, "proxy", "tcp4" if version == 4 else "tcp6", (src, draw(ports)), (dst, draw(ports)))
    style = draw(st.sampled_from(["plain", "exploded", "upper", "dotted"]))
    line = encode_v1(header, style=style)
    # Two dotted-quad IPv6 addresses can overflow the 107 bytes the spec allows
    # (it counts 39 characters an address); such lines are rejected, tested above.
    assume(len(line) <= V1_MAX_LENGTH)
    return line, header


ssl_subtlvs = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([0x21, 0x23, 0x24, 0x25]), st.text(st.characters(max_codepoint=127), max_size=30)),
        st.tuples(st.just(0x22), st.text(max_size=30)),
        st.tuples(st.integers(0x26, 0xFF), st.binary(max_size=20)),
    ),
    max_size=5,
    unique_by=lambda t: t[0] if 0x21 <= t[0] <= 0x25 else object(),
).map(lambda subs: tuple((k, v.encode() if isinstance(v, str) else v) for k, v in subs))

SPEC_TYPES = {0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x30}
single_tlvs = st.fixed_dictionaries(
    {},
    optional={
        0x01: st.binary(max_size=20),
        0x02: st.text(max_size=40).map(str.encode).filter(lambda b: len(b) <= 255),
        0x03: st.just(b"\0\0\0\0"),
        0x05: st.binary(max_size=128),
        0x20: st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1), ssl_subtlvs).map(
            lambda t: bytes([t[0]]) + struct.pack("!I", t[1]) + b"".join(tlv(k, v) for k, v in t[2])
        ),
        0x30: st.text(st.characters(max_codepoint=127), max_size=20).map(str.encode),
    },
)
other_tlvs = st.lists(
    st.tuples(st.integers(0, 255).filter(lambda k: k not in SPEC_TYPES), st.binary(max_size=40)), max_size=4
)


@st.composite
def v2_cases(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    command = draw(st.sampled_from(["proxy", "local"]))
    family = draw(st.sampled_from(list(FAMILY_BYTES)))
    source = destination = None
    if command == "proxy" and family[-1] in "46":
        version: Literal[4, 6] = 4 if family[-1] == "4" else 6
        source = (draw(st.ip_addresses(v=version)), draw(ports))
        destination = (draw(st.ip_addresses(v=version)), draw(ports))
    tlvs = list(draw(single_tlvs).items()) + draw(other_tlvs)
    tlvs = draw(st.permutations(tlvs))
    header = ProxyHeader(2, command, family, source, destination, tuple(tlvs))  # type: ignore[arg-type]
    noops = draw(st.lists(st.tuples(st.integers(0, len(tlvs)), st.binary(max_size=8)), max_size=3))
    data = encode_v2(header, noops=noops, filler=draw(st.binary(max_size=216)))
    return data, with_crc_value(header, data)


valid_cases = st.one_of(v1_cases(), v2_cases())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid header with a few bytes replaced, inserted or cut (close calls)."""
    data = bytearray(draw(valid_cases)[0] + draw(st.binary(max_size=8)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if op == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 3))]
        else:
            del data[at:]
    return bytes(data)


any_input = st.one_of(st.binary(max_size=300), mutated(), valid_cases.map(lambda c: c[0]))


# --- outcomes ----------------------------------------------------------------------------


def one_shot(data: bytes, **options: object) -> object:
    try:
        result = parse(data, **options)  # type: ignore[arg-type]
    except ProxyProtocolError:
        return "error"
    if result is None:
        return None
    header, length = result
    assert 0 < length <= len(data)
    return header, data[length:]


def split(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    at, i = 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)] if sizes else 1
        yield data[at : at + size]
        at += size
        i += 1


def fed(data: bytes, sizes: Sequence[int], **options: object) -> object:
    reader = ProxyProtocolReader(**options)  # type: ignore[arg-type]
    chunks = list(split(data, sizes))
    for i, chunk in enumerate(chunks):
        try:
            header = reader.feed(chunk)
        except ProxyProtocolError:
            return "error"
        if header is not None:
            return header, reader.rest + b"".join(chunks[i + 1 :])
    return None


# --- CRC32C ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"123456789", 0xE3069283),  # the check value of CRC-32C
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_bitwise(data) == expected


@given(st.binary(max_size=300), st.binary(max_size=40))
def test_crc32c_matches_bitwise_and_chains(a: bytes, b: bytes) -> None:
    assert crc32c(a) == crc32c_bitwise(a)
    assert crc32c(b, crc32c(a)) == crc32c(a + b)
    assert crc32c(bytearray(a)) == crc32c(memoryview(a)) == crc32c(a)


# --- v1 -------------------------------------------------------------------------------------------


def test_v1_spec_example() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    header, length = parse(data)  # type: ignore[misc]
    assert header == ProxyHeader(
        1, "proxy", "tcp4", (IPv4Address("192.168.0.1"), 56324), (IPv4Address("192.168.0.11"), 443)
    )
    assert header.client == (IPv4Address("192.168.0.1"), 56324)
    assert data[length:] == b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        b" 65535 65535\r\n",
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        b"PROXY UNKNOWN\r\n",
    ],
)
def test_v1_longest_lines_of_the_spec_are_accepted(line: bytes) -> None:
    result = parse(line)
    assert result is not None and result[1] == len(line) <= V1_MAX_LENGTH


def test_v1_line_of_108_bytes_is_rejected_before_its_end() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n"
    assert len(line) == V1_MAX_LENGTH + 1
    with pytest.raises(ProxyProtocolError, match="CRLF"):
        parse(line[:106])  # the CR would have to be byte 107: no need to wait for it
    with pytest.raises(ProxyProtocolError, match="CRLF"):
        parse(line)


def test_v1_unknown_means_use_the_socket_addresses() -> None:
    header, _ = parse(b"PROXY UNKNOWN 10.0.0.1 \xff\x00 whatever\r\n")  # type: ignore[misc]
    assert header == ProxyHeader(1, "local", "unspec")
    assert header.v1_unknown and header.source is None and header.client is None


def test_v1_tcp6_mapped_source_is_kept_as_sent_and_unmapped_by_client() -> None:
    header, _ = parse(b"PROXY TCP6 ::ffff:203.0.113.5 2001:DB8::1 0 65535\r\n")  # type: ignore[misc]
    assert header.source == (IPv6Address("::ffff:203.0.113.5"), 0)
    assert header.destination == (IPv6Address("2001:db8::1"), 65535)
    assert header.client == (IPv4Address("203.0.113.5"), 0)


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n",  # leading zero: octal?
        b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 0443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 00 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 +5632 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 99999 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11  443\r\n",
        b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 80\r\n",
        b"PROXY  TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP4 256.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP4 192.168.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP4 \xd9\xa1.2.3.4 192.168.0.11 56324 443\r\n",  # non-ASCII digit
        b"PROXY TCP4 ::1 ::1 56324 443\r\n",
        b"PROXY TCP6 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 56324 443\r\n",
        b"PROXY TCP6 2001:db8::1::2 ::1 56324 443\r\n",
        b"PROXY TCP6 2001:0db80::1 ::1 56324 443\r\n",
        b"PROXY TCP6 ::ffff:1.2.3.04 ::1 56324 443\r\n",
        b"PROXY TCP6 [::1] ::1 56324 443\r\n",
        b"PROXY tcp4 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"proxy TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP5 192.168.0.1 192.168.0.11 56324 443\r\n",
        b"PROXY TCP4\r\n",
        b"PROXY \r\n",
        b"PROXY\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY UNKNOWN\tx\r\n",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",  # LF alone
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX",  # CR alone
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\r\n",
        b"PROXY UNKNOWN\n",
        b"PROXY UNKNOWN junk\rjunk\r\n",
    ],
)
def test_v1_malformed_lines_are_rejected(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data + b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProxyProtocolError):
        parse(data)
    assert fed(data, [1]) == "error"


@pytest.mark.parametrize(
    "prefix",
    [
        b"PROXY TCP4 1.2.3.4 x",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3",
        b"PROXY TCP4 1.2.3.4  ",
        b"PROXY TCP6 ::1 ::g",
        b"PROXY TCP6 fe80::1%",
        b"PROXY TCP7",
        b"PROXY UNKNOWNS",
    ],
)
def test_v1_fails_before_the_line_ends_when_no_ending_can_fix_it(prefix: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(prefix)


# --- v2 -------------------------------------------------------------------------------------------


def v2(vc: int, fam: int, body: bytes) -> bytes:
    return SIG + struct.pack("!BBH", vc, fam, len(body)) + body


INET4 = IPv4Address("192.0.2.1").packed + IPv4Address("198.51.100.2").packed + struct.pack("!HH", 4000, 443)
INET6 = IPv6Address("::ffff:192.0.2.1").packed + IPv6Address("2001:db8::2").packed + struct.pack("!HH", 4000, 443)


def test_v2_local_health_check() -> None:
    header, length = parse(v2(0x20, 0x00, b"") + b"GET")  # type: ignore[misc]
    assert (header.version, header.command, header.family, header.source, header.tlvs) == (
        2,
        "local",
        "unspec",
        None,
        (),
    )
    assert length == 16 and not header.v1_unknown and header.client is None


def test_v2_local_ignores_addresses_but_keeps_tlvs() -> None:
    header, _ = parse(v2(0x20, 0x11, INET4 + tlv(0x01, b"h2")))  # type: ignore[misc]
    assert header.command == "local" and header.family == "tcp4"
    assert header.source is None and header.destination is None
    assert header.alpn == b"h2"


@pytest.mark.parametrize(
    ("fam", "body", "family", "source", "destination"),
    [
        (0x11, INET4, "tcp4", (IPv4Address("192.0.2.1"), 4000), (IPv4Address("198.51.100.2"), 443)),
        (0x12, INET4, "udp4", (IPv4Address("192.0.2.1"), 4000), (IPv4Address("198.51.100.2"), 443)),
        (0x21, INET6, "tcp6", (IPv6Address("::ffff:192.0.2.1"), 4000), (IPv6Address("2001:db8::2"), 443)),
        (0x22, INET6, "udp6", (IPv6Address("::ffff:192.0.2.1"), 4000), (IPv6Address("2001:db8::2"), 443)),
        (0x31, b"/run/a.sock".ljust(108, b"\0") * 2, "unix", None, None),
        (0x32, bytes(216), "unix_dgram", None, None),
        (0x00, b"", "unspec", None, None),
    ],
)
def test_v2_proxy_families(fam: int, body: bytes, family: str, source: object, destination: object) -> None:
    header, length = parse(v2(0x21, fam, body))  # type: ignore[misc]
    assert (header.command, header.family, header.source, header.destination) == ("proxy", family, source, destination)
    assert length == 16 + len(body)


def test_v2_mapped_source_is_kept_as_sent_and_unmapped_by_client() -> None:
    header, _ = parse(v2(0x21, 0x21, INET6))  # type: ignore[misc]
    assert header.source == (IPv6Address("::ffff:192.0.2.1"), 4000)
    assert header.client == (IPv4Address("192.0.2.1"), 4000)


def test_v2_real_aws_nlb_header_with_crc32c_and_vpce_id() -> None:
    # An AWS NLB (PrivateLink) header as captured on the wire, published as a
    # test vector by libproxyprotocol: CRC32C, AWS VPCE id, then 36-byte NOOP.
    data = bytes.fromhex(
        "0d0a0d0a000d0a515549540a21110054ac1f0771ac1f0a1fc8f20050030004e8d6892dea"
        "001701767063652d3038643262663135666163353030316339040024"
    ) + bytes(36)
    header, length = parse(data)  # type: ignore[misc]
    assert length == len(data) == 100
    assert header.client == (IPv4Address("172.31.7.113"), 51442)
    assert header.destination == (IPv4Address("172.31.10.31"), 80)
    assert header.crc32c_verified
    assert header.aws_vpce_id == "vpce-08d2bf15fac5001c9"
    assert [kind for kind, _ in header.tlvs] == [0x03, 0xEA]  # NOOP skipped
    assert crc32c_bitwise(data[:31] + bytes(4) + data[35:]) == 0xE8D6892D
    with pytest.raises(ProxyProtocolError, match="CRC32C"):
        parse(data[:-1] + b"\x01")


def crc_header(*tlvs: bytes, fam: int = 0x11, body: bytes = INET4) -> bytes:
    data = v2(0x21, fam, body + tlv(0x03, bytes(4)) + b"".join(tlvs))
    at = 16 + len(body) + 3
    return data[:at] + struct.pack("!I", crc32c_bitwise(data)) + data[at + 4 :]


@pytest.mark.parametrize(
    "data",
    [
        v2(0x11, 0x11, INET4),  # version 1
        v2(0x31, 0x11, INET4),  # version 3
        v2(0x01, 0x11, INET4),  # version 0
        v2(0x22, 0x11, INET4),  # command 2
        v2(0x2F, 0x11, INET4),
        v2(0x21, 0x13, INET4),  # protocol 3
        v2(0x21, 0x41, INET4),  # family 4
        v2(0x21, 0x10, INET4),  # combinations outside the spec's list
        v2(0x21, 0x01, INET4),
        v2(0x21, 0x11, INET4[:11]),  # address block does not fit
        v2(0x21, 0x21, INET4 * 2),
        v2(0x21, 0x31, bytes(215)),
        v2(0x20, 0x21, INET4),  # LOCAL too: the declared block must fit
        v2(0x21, 0x11, INET4 + b"\x01"),  # TLV header cut
        v2(0x21, 0x11, INET4 + b"\x01\x00"),
        v2(0x21, 0x11, INET4 + tlv(0x01, b"h2")[:-1]),  # TLV value overruns
        v2(0x21, 0x11, INET4 + tlv(0x01, b"h2") + b"\xee\x00\x05\x01"),
        v2(0x21, 0x00, b"\x04"),
        v2(0x21, 0x11, INET4 + tlv(0x03, b"\0\0\0\0")),  # wrong CRC
        v2(0x21, 0x11, INET4 + tlv(0x03, b"\0\0\0")),
        crc_header(tlv(0x03, bytes(4))),  # two CRC TLVs
        v2(0x21, 0x11, INET4 + tlv(0x02, b"a.example") + tlv(0x02, b"b.example")),  # two answers
        v2(0x21, 0x11, INET4 + tlv(0x01, b"h2") + tlv(0x01, b"http/1.1")),
        v2(0x21, 0x11, INET4 + tlv(0x05, b"u" * 129)),
        v2(0x21, 0x11, INET4 + tlv(0x02, b"a" * 256)),
        v2(0x21, 0x11, INET4 + tlv(0x02, b"\xff.example")),
        v2(0x21, 0x11, INET4 + tlv(0x30, "café".encode())),
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x01\0\0\0")),  # SSL shorter than 5
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x01\0\0\0\0" + b"\x21\x00\x09TLSv1.3")),
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x01\0\0\0\0" + b"\x21\x00")),
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x07\0\0\0\0" + tlv(0x22, b"\xc3("))),
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x01\0\0\0\0" + tlv(0x21, "TLSv1.3é".encode()))),
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x07\0\0\0\0" + tlv(0x22, b"a") + tlv(0x22, b"b"))),
    ],
)
def test_v2_malformed_headers_are_rejected(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data + b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProxyProtocolError):
        parse(data)


@pytest.mark.parametrize("leftover", [b"\x01", b"\x01\x00"])
def test_v2_bytes_too_few_for_a_tlv_header_are_an_error_whatever_follows(leftover: bytes) -> None:
    data = v2(0x21, 0x11, INET4 + leftover)
    for after in (b"", b"\x00", b"\xff" * 300):
        with pytest.raises(ProxyProtocolError, match="truncated TLV"):
            parse(data + after)


@pytest.mark.parametrize(
    "data",
    [
        v2(0x21, 0x11, INET4 + tlv(0x05, b"u" * 128)),
        v2(0x21, 0x11, INET4 + tlv(0x02, "é".encode() * 127 + b"x")),
        v2(0x21, 0x11, INET4 + tlv(0x04, b"") + tlv(0x04, b"") + tlv(0x01, b"")),
        v2(0x21, 0x11, INET4 + tlv(0xE5, b"x") + tlv(0xE5, b"y") + tlv(0x99, b"")),
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x00\0\0\0\0") + tlv(0x30, b"blue")),
        v2(0x21, 0x11, INET4 + tlv(0x20, b"\x01\0\0\0\0" + tlv(0x99, b"\xff") + tlv(0x99, b"\xfe"))),
        crc_header(tlv(0x02, b"example.com"), tlv(0x04, bytes(7))),
        crc_header(fam=0x00, body=b""),
    ],
)
def test_v2_edge_headers_are_accepted(data: bytes) -> None:
    assert parse(data) is not None


def test_v2_tlv_accessors() -> None:
    ssl = (
        b"\x07"
        + struct.pack("!I", 0)
        + tlv(0x21, b"TLSv1.3")
        + tlv(0x22, "Zoë".encode())
        + tlv(0x23, b"TLS_AES_256_GCM_SHA384")
        + tlv(0x24, b"RSA-SHA256")
        + tlv(0x25, b"RSA2048")
    )
    body = (
        INET4
        + tlv(0x01, b"h2")
        + tlv(0x02, "bücher.example".encode())
        + tlv(0x05, b"\x00id")
        + tlv(0x20, ssl)
        + tlv(0x30, b"blue")
        + tlv(0xEA, b"\x01vpce-0123456789abcdef0")
        + tlv(0xEE, b"\x01" + struct.pack("<I", 0x21004DC1))
        + tlv(0xE0, struct.pack("!Q", 0xFFFFFFFFC0A86402))
        + tlv(0xF1, b"experimental")
    )
    header, _ = parse(v2(0x21, 0x11, body))  # type: ignore[misc]
    assert header.alpn == b"h2"
    assert header.authority == "bücher.example"
    assert header.unique_id == b"\x00id"
    assert header.netns == "blue"
    assert not header.crc32c_verified
    assert header.aws_vpce_id == "vpce-0123456789abcdef0"
    assert header.azure_link_id == 0x21004DC1
    assert header.gcp_psc_connection_id == 18446744072646845442
    assert header.tlv(0xF1) == b"experimental" and header.tlv(0xF2) is None
    info = header.ssl
    assert info is not None
    assert (info.client_ssl, info.client_cert_conn, info.client_cert_sess, info.client_cert_verified) == (
        True,
        True,
        True,
        True,
    )
    assert (info.version, info.cn, info.cipher, info.sig_alg, info.key_alg) == (
        "TLSv1.3",
        "Zoë",
        "TLS_AES_256_GCM_SHA384",
        "RSA-SHA256",
        "RSA2048",
    )


def test_v2_accessors_are_none_when_absent_or_of_another_shape() -> None:
    body = INET4 + tlv(0xEA, b"\x02other") + tlv(0xEE, b"\x01\x00\x00") + tlv(0xE0, b"short")
    header, _ = parse(v2(0x21, 0x11, body))  # type: ignore[misc]
    assert header.aws_vpce_id is None and header.azure_link_id is None and header.gcp_psc_connection_id is None
    assert header.alpn is header.authority is header.unique_id is header.netns is header.ssl is None
    assert parse(v2(0x21, 0x11, INET4 + tlv(0xEA, b"\x01\xff")))[0].aws_vpce_id is None  # type: ignore[index]


def test_ssl_verified_needs_a_certificate_not_just_verify_zero() -> None:
    # HAProxy sends verify=0 when the client presented no certificate at all.
    assert not SSLInfo(client=0x01, verify=0).client_cert_verified
    assert not SSLInfo(client=0x07, verify=1).client_cert_verified
    assert SSLInfo(client=0x05, verify=0).client_cert_verified


# --- early failure, caps, the reader ------------------------------------------------------


@given(st.data())
def test_a_byte_off_the_signature_fails_at_once(data: st.DataObject) -> None:
    signature = data.draw(st.sampled_from([b"PROXY ", SIG]))
    at = data.draw(st.integers(0, len(signature) - 1))
    wrong = data.draw(st.integers(0, 255).filter(lambda b: b != signature[at]))
    prefix = signature[:at] + bytes([wrong])
    assume(not (at == 0 and wrong in (0x50, 0x0D)))  # the other version's first byte
    with pytest.raises(ProxyProtocolError):
        ProxyProtocolReader().feed(prefix)


@pytest.mark.parametrize("first", [b"G", b"\x16", b"S", b"\x00", b" "])
def test_other_protocols_fail_on_their_first_byte(first: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        ProxyProtocolReader().feed(first)


def test_versions_restrict_what_is_accepted() -> None:
    with pytest.raises(ProxyProtocolError, match="v2"):
        ProxyProtocolReader(versions=(2,)).feed(b"P")
    with pytest.raises(ProxyProtocolError, match="v1"):
        ProxyProtocolReader(versions=[1]).feed(b"\r")
    assert ProxyProtocolReader(versions=(2,)).feed(v2(0x20, 0x00, b"")) is not None
    assert parse(b"PROXY UNKNOWN\r\n", versions={1}) is not None


def test_v2_length_over_the_cap_fails_on_the_length_field() -> None:
    reader = ProxyProtocolReader()
    reader.feed(SIG + b"\x21\x11")
    with pytest.raises(ProxyProtocolError, match="4096"):
        reader.feed(struct.pack("!H", DEFAULT_MAX_V2_LENGTH - 16 + 1))
    assert parse(SIG + b"\x21\x11" + struct.pack("!H", DEFAULT_MAX_V2_LENGTH - 16)) is None
    with pytest.raises(ProxyProtocolError):
        parse(v2(0x21, 0x11, INET4 + tlv(0x01, b"h2")), max_v2_length=16 + 12 + 4)


@settings(max_examples=200)
@given(st.integers(16, 16 + 0xFFFF), st.integers(0, 0xFFFF))
def test_v2_cap_is_exact(cap: int, length: int) -> None:
    head = SIG + b"\x20\x00" + struct.pack("!H", length)
    outcome = one_shot(head, max_v2_length=cap)
    if 16 + length > cap:
        assert outcome == "error"
    elif length:
        assert outcome is None
    else:
        assert outcome not in ("error", None)


def test_reader_hands_over_the_rest_once() -> None:
    reader = ProxyProtocolReader()
    with pytest.raises(RuntimeError):
        _ = reader.rest
    assert reader.feed(b"") is None
    assert reader.feed(bytearray(b"PROXY TCP4 1.2.3.4 ")) is None
    header = reader.feed(memoryview(b"5.6.7.8 1 2\r\nGET /"))
    assert header is not None and header.client == (IPv4Address("1.2.3.4"), 1)
    assert reader.rest == b"GET /"
    with pytest.raises(RuntimeError):
        reader.feed(b" HTTP/1.1")


def test_reader_keeps_failing_after_an_error() -> None:
    reader = ProxyProtocolReader()
    with pytest.raises(ProxyProtocolError):
        reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProxyProtocolError):
        reader.feed(b"PROXY UNKNOWN\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"GET /" + b"A" * 10_000 + b"\r\n\x1b[31m",
        b"PROXY TCP4 " + b"1" * 200,
        b"PROXY TCP6 " + b"f" * 60 + b" ::1 1 2\r\n",
        b"PROXY UNKNOWN \x1b[2J\x00" + b"x" * 200,
        v2(0x21, 0x11, INET4 + tlv(0x02, b"\xff\r\n" * 80)),
    ],
)
def test_error_messages_are_short_and_printable(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError) as caught:
        parse(data)
    message = str(caught.value)
    assert len(message) < 300 and message.isprintable()


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"versions": ()}, "versions"),
        ({"versions": (3,)}, "versions"),
        ({"versions": (1, 3)}, "versions"),
        ({"versions": "12"}, "versions"),
        ({"versions": (True,)}, "versions"),
        ({"versions": 2}, "versions"),
        ({"max_v2_length": 15}, "max_v2_length"),
        ({"max_v2_length": 16 + 0x10000}, "max_v2_length"),
        ({"max_v2_length": 4096.0}, "max_v2_length"),
        ({"max_v2_length": True}, "max_v2_length"),
    ],
)
def test_bad_configuration_is_a_config_error(options: dict[str, object], option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        ProxyProtocolReader(**options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=option):
        parse(b"PROXY UNKNOWN\r\n", **options)  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(valid_cases, st.binary(max_size=20))
def test_encoded_headers_parse_to_what_was_encoded(case: tuple[bytes, ProxyHeader], payload: bytes) -> None:
    data, expected = case
    assert one_shot(data + payload) == (expected, payload)


@PROPERTY
@given(any_input)
def test_accepted_headers_round_trip_through_the_independent_encoder(data: bytes) -> None:
    outcome = one_shot(data)
    assume(isinstance(outcome, tuple))
    header = outcome[0]  # type: ignore[index]
    again = one_shot(reencode(header))
    assert isinstance(again, tuple) and again[1] == b""
    assert without_crc_value(again[0]) == without_crc_value(header)


@PROPERTY
@given(any_input, st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_any_split_gives_the_one_shot_answer(data: bytes, sizes: list[int]) -> None:
    assert fed(data, sizes) == one_shot(data)


@PROPERTY
@given(valid_cases)
def test_one_byte_writes_give_the_one_shot_answer(case: tuple[bytes, ProxyHeader]) -> None:
    data, expected = case
    assert fed(data + b"rest", [1]) == (expected, b"rest")


@PROPERTY
@given(any_input)
def test_prefixes_are_consistent(data: bytes) -> None:
    """Once a prefix is rejected or accepted, every longer one says the same."""
    settled: object = None
    for end in range(len(data) + 1):
        outcome = one_shot(data[:end])
        if isinstance(settled, tuple):
            assert isinstance(outcome, tuple) and outcome[0] == settled[0]
        elif settled == "error":
            assert outcome == "error"
        elif outcome is not None:
            settled = outcome


@PROPERTY
@given(valid_cases)
def test_truncated_headers_need_more_and_are_never_accepted(case: tuple[bytes, ProxyHeader]) -> None:
    data, _ = case
    for end in range(len(data)):
        assert one_shot(data[:end]) is None


@PROPERTY
@given(st.binary(max_size=500))
def test_garbage_raises_nothing_but_proxy_protocol_error(data: bytes) -> None:
    for versions in ((1, 2), (1,), (2,)):
        one_shot(data, versions=versions)  # any other exception fails the test
        one_shot(b"PROXY " + data, versions=versions)
        one_shot(SIG + data, versions=versions)


@PROPERTY
@given(v2_cases(), st.data())
def test_crc32c_catches_any_changed_byte(case: tuple[bytes, ProxyHeader], data: st.DataObject) -> None:
    header = case[1]
    first = dataclasses.replace(header, tlvs=((PP2_TYPE_CRC32C, b""), *(t for t in header.tlvs if t[0] != 3)))
    raw = encode_v2(first)
    crc_type_at = _tlv_offset(raw, PP2_TYPE_CRC32C) - 3
    # Not the bytes that decide where the CRC TLV is (family, length, its own
    # type and length): changing those can make it vanish, which no CRC prevents.
    protected = [i for i in range(len(raw)) if i not in (13, 14, 15, crc_type_at, crc_type_at + 1, crc_type_at + 2)]
    at = data.draw(st.sampled_from(protected))
    changed = bytearray(raw)
    changed[at] ^= data.draw(st.integers(1, 255))
    assert one_shot(raw) != "error"
    assert one_shot(bytes(changed)) in ("error", None)
