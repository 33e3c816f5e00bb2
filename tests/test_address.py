"""The address layer on the traps docs/security.md lists."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realip import AddressError, ConfigError, parse_host_port, parse_ip
from realip.address import TrustedNetworks, canonical_host, parse_networks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", IPv4Address("203.0.113.5")),
        ("::ffff:203.0.113.5", IPv4Address("203.0.113.5")),
        ("::FFFF:203.0.113.5", IPv4Address("203.0.113.5")),
        ("::ffff:cb00:7105", IPv4Address("203.0.113.5")),  # mapped, hex spelling
        ("0:0:0:0:0:ffff:203.0.113.5", IPv4Address("203.0.113.5")),
        ("2001:DB8::1", IPv6Address("2001:db8::1")),
        ("fe80::1%eth0", IPv6Address("fe80::1")),
        ("::1", IPv6Address("::1")),
        ("64:ff9b::203.0.113.5", IPv6Address("64:ff9b::cb00:7105")),  # NAT64 prefix stays IPv6
    ],
)
def test_parse_ip_unmaps_and_drops_zone(text: str, expected: object) -> None:
    assert parse_ip(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "unknown", "_hidden", "<script>alert(1)</script>", "1.2.3.4:80", "[::1]", "01.2.3.4",
        "1.2.3", "1.2.3.4.5", "256.1.1.1", "::ffff:256.1.1.1", "2001:db8::1::2", "1.2.3.4%eth0",
        "fe80::1%", "١.٢.٣.٤", "1.2.3.4\x00", " 1.2.3.4", "1.2.3.4 ", "x" * 1000, "2001:db8::g",
        "localhost",
    ],
)  # fmt: skip
def test_parse_ip_rejects_what_is_not_an_address(text: str) -> None:
    with pytest.raises(AddressError):
        parse_ip(text)


def test_address_error_is_log_safe() -> None:
    with pytest.raises(AddressError) as info:
        parse_ip("A" * 5000)
    assert len(str(info.value)) < 150


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("1.2.3.4", "1.2.3.4", None),
        ("1.2.3.4:5678", "1.2.3.4", 5678),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("[2001:db8::1]", "2001:db8::1", None),
        ("2001:db8::1", "2001:db8::1", None),  # bare IPv6: every colon belongs to it
        ("[::ffff:1.2.3.4]:80", "1.2.3.4", 80),
        ("::ffff:1.2.3.4", "1.2.3.4", None),
        ("1.2.3.4:0", "1.2.3.4", 0),
        ("1.2.3.4:65535", "1.2.3.4", 65535),
    ],
)
def test_parse_host_port_forms(text: str, ip: str, port: int | None) -> None:
    parsed_ip, parsed_port = parse_host_port(text)
    assert (str(parsed_ip), parsed_port) == (ip, port)


@pytest.mark.parametrize(
    "text",
    ["1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:+80", "1.2.3.4: 80", "1.2.3.4:8_0", "[1.2.3.4]:80", "[::1", "[::1]x",
     "[::1]:", "[::1]:99999", "2001:db8::1:80:", "1.2.3.4:٨٠", ":80", "[]:80"],
)  # fmt: skip
def test_parse_host_port_rejects_malformed(text: str) -> None:
    with pytest.raises(AddressError):
        parse_host_port(text)


def test_canonical_host_is_compressed_lowercase() -> None:
    assert canonical_host("2001:0DB8:0000::0001") == "2001:db8::1"


def test_trusted_networks_match_mapped_peers() -> None:
    trusted = TrustedNetworks.parse("10.0.0.0/8, 2001:db8::/32", option="trusted_proxies")
    assert parse_ip("::ffff:10.0.0.1") in trusted
    assert parse_ip("10.255.255.255") in trusted
    assert parse_ip("2001:db8::7") in trusted
    assert parse_ip("11.0.0.1") not in trusted
    assert parse_ip("::ffff:11.0.0.1") not in trusted
    assert "10.0.0.1" not in trusted  # only parsed addresses match, never raw text


def test_trusted_networks_written_mapped_match_ipv4() -> None:
    trusted = TrustedNetworks.parse(["::ffff:10.0.0.0/104"], option="trusted_proxies")
    assert parse_ip("10.1.2.3") in trusted


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "10.0.0.0/33", "not-a-network", "10.0.0.0/8 junk"])
def test_bad_network_names_option_and_value(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_networks([bad], option="trusted_proxies")
    assert "trusted_proxies" in str(info.value)
    assert repr(bad) in str(info.value)


def test_comma_separated_string_allows_trailing_comma() -> None:
    assert len(parse_networks("10.0.0.0/8, 192.168.0.1,", option="x")) == 2


@given(st.text(max_size=80))
def test_parse_ip_never_returns_a_non_address(text: str) -> None:
    try:
        ip = parse_ip(text)
    except AddressError:
        return
    assert parse_ip(str(ip)) == ip  # what comes out is canonical and parses again


@given(st.ip_addresses())
def test_every_address_round_trips(ip: IPv4Address | IPv6Address) -> None:
    parsed = parse_ip(str(ip))
    mapped = getattr(ip, "ipv4_mapped", None)
    assert parsed == (mapped or ip)
