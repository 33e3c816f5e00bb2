"""Forwarding-header parsers on the traps docs/security.md lists, plus property tests."""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from realip.address import AddressError, parse_ip
from realip.forwarding import (
    MAX_ENTRIES,
    MAX_HEADER_LENGTH,
    SNIPPET_LENGTH,
    Cut,
    ForwardedElement,
    Node,
    _ip_fast,
    last_entries,
    parse_forwarded,
    parse_forwarded_element,
    parse_host,
    parse_list_entry,
    parse_node,
    parse_proto,
    parse_xff_entry,
    rsplit_forwarded,
    snippet,
    split_list,
)

PROPERTY = settings(max_examples=300, deadline=None)
ADDRESS_TYPES = (IPv4Address, IPv6Address)


# --------------------------------------------------------------------------- split_list


def test_split_list_trims_entries_in_header_order() -> None:
    assert split_list(" 203.0.113.5 ,\t10.0.0.1,10.0.0.2 ") == ["203.0.113.5", "10.0.0.1", "10.0.0.2"]


def test_split_list_keeps_empty_entries_so_a_walk_stops_there() -> None:
    assert split_list("203.0.113.5,,10.0.0.1") == ["203.0.113.5", "", "10.0.0.1"]
    assert split_list("10.0.0.1, ") == ["10.0.0.1", ""]
    assert split_list(",") == ["", ""]


@pytest.mark.parametrize("blank", ["", " ", "\t \t"])
def test_split_list_of_absent_or_blank_header_has_no_entries(blank: str) -> None:
    assert split_list(blank) == []


def test_split_list_trims_only_spaces_and_tabs_not_control_characters() -> None:
    assert split_list("1.2.3.4\x0b, \x1c5.6.7.8") == ["1.2.3.4\x0b", "\x1c5.6.7.8"]


# --------------------------------------------------------------------------- last_entries (caps)


def test_last_entries_returns_whole_short_header_uncut() -> None:
    assert last_entries("203.0.113.5, 10.0.0.1") == (["203.0.113.5", " 10.0.0.1"], None)
    assert last_entries("") == ([], None)
    assert last_entries("  ") == ([], None)


def test_last_entries_keeps_the_rightmost_entries_beyond_the_count_cap() -> None:
    entries = [f"10.0.{i // 256}.{i % 256}" for i in range(MAX_ENTRIES + 10)]
    kept, cut = last_entries(",".join(entries))
    assert kept == entries[-MAX_ENTRIES:]
    assert cut == f"more than {MAX_ENTRIES} entries"


def test_last_entries_exactly_at_the_count_cap_is_not_cut() -> None:
    entries = ["10.0.0.1"] * MAX_ENTRIES
    assert last_entries(",".join(entries)) == (entries, None)


def test_last_entries_never_returns_a_partial_entry_at_the_length_cut() -> None:
    # The cut falls inside "10.1.2.3": the kept part would start with the valid "0.1.2.3".
    kept_part = "0.1.2.3, 203.0.113.5,"
    kept_part += "7" * (MAX_HEADER_LENGTH - len(kept_part))
    value = "1" + kept_part
    assert value[-MAX_HEADER_LENGTH:].startswith("0.1.2.3")
    kept, cut = last_entries(value)
    assert kept == [" 203.0.113.5", kept_part.rpartition(",")[2]]
    assert cut == f"header longer than {MAX_HEADER_LENGTH} characters"


def test_last_entries_one_huge_entry_is_all_cut() -> None:
    assert last_entries("1" * (MAX_HEADER_LENGTH + 1)) == ([], f"header longer than {MAX_HEADER_LENGTH} characters")


@PROPERTY
@given(st.lists(st.text(alphabet="0123456789.:ab ", max_size=6), min_size=1, max_size=80))
def test_last_entries_is_always_a_suffix_of_the_header(parts: list[str]) -> None:
    value = ",".join(parts)
    kept, cut = last_entries(value)
    if not value.strip(" \t"):
        assert (kept, cut) == ([], None)
        return
    assert kept == parts[len(parts) - len(kept) :]
    assert (cut is None) == (len(kept) == len(parts))
    assert len(kept) <= MAX_ENTRIES


# --------------------------------------------------------------------------- X-Forwarded-For entries


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("203.0.113.5", "203.0.113.5", None),
        (" 203.0.113.5\t", "203.0.113.5", None),
        ("203.0.113.5:5678", "203.0.113.5", 5678),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("[2001:db8::1]", "2001:db8::1", None),
        ("2001:db8::1", "2001:db8::1", None),  # bare IPv6 without brackets
        ("2001:db8::1:443", "2001:db8::1:443", None),  # bare IPv6: the last group is no port
        ("2001:DB8:0:0::1", "2001:db8::1", None),
        ("::ffff:203.0.113.5", "203.0.113.5", None),  # mapped inside a header is IPv4
        ("::FFFF:cb00:7105", "203.0.113.5", None),
        ("[::ffff:203.0.113.5]:80", "203.0.113.5", 80),
        ("64:ff9b::203.0.113.5", "64:ff9b::cb00:7105", None),  # NAT64 stays IPv6, never cut at a colon
        ("[64:ff9b::203.0.113.5]:8080", "64:ff9b::cb00:7105", 8080),
        ("fe80::1%eth0", "fe80::1", None),
        ("[fe80::1%eth0]:80", "fe80::1", 80),
        ("1.2.3.4:0", "1.2.3.4", 0),
        ("1.2.3.4:65535", "1.2.3.4", 65535),
    ],
)
def test_xff_entry_forms(text: str, ip: str, port: int | None) -> None:
    expected = (ipaddress.ip_address(ip), port)
    assert parse_xff_entry(text) == expected
    assert parse_list_entry(text) == expected


def test_waitress_trap_mapped_address_is_not_cut_to_ffff() -> None:
    # waitress turns "::ffff:1.2.3.4" into REMOTE_ADDR "::ffff".
    assert parse_xff_entry("::ffff:1.2.3.4") == (IPv4Address("1.2.3.4"), None)
    with pytest.raises(AddressError):
        parse_xff_entry("::ffff:1.2.3.4:80")  # ambiguous without brackets: garbage, not "::ffff"


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "unknown", "UNKNOWN", "_hidden", "_SEVKISEK", "<script>alert(1)</script>", "1.2.3.4:", ":80",
        "1.2.3.4:65536", "1.2.3.4:+80", "1.2.3.4:8_0", "1.2.3.4: 80", "[1.2.3.4]:80", "[::1", "[::1]x", "[::1]:",
        "01.2.3.4", "1.2.3", "256.1.1.1", "1.2.3.4.5", "localhost", "example.com:80", "1.2.3.4\x00",
        "1.2.3.4\x0b", "\x1c1.2.3.4", "1.2.3.4\r\n", "١.٢.٣.٤", "1.2.3.4:٨٠", "２.２.２.２", "fe80::1%<script>",
        "fe80::1%", "fe80::1%eth0\x00", "1.2.3.4%eth0", "x" * 5000, "1.2.3.4 5.6.7.8", "1.2.3.4;5.6.7.8",
        "for=1.2.3.4", '"1.2.3.4"', "2001:db8::1]:80", "[]:80", "\ud800",
    ],
)  # fmt: skip
def test_xff_entry_garbage_is_an_address_error(text: str) -> None:
    with pytest.raises(AddressError):
        parse_xff_entry(text)
    reason = parse_list_entry(text)
    assert isinstance(reason, str)
    assert reason.startswith("invalid entry ")


def test_unknown_and_obfuscated_are_named_in_the_reason() -> None:
    assert "unknown" in str(parse_list_entry("unknown"))
    assert "obfuscated" in str(parse_list_entry("_hidden"))


def test_reasons_are_log_safe() -> None:
    reason = parse_list_entry("\x1b[31m" + "A" * 5000 + "\u202e")
    assert isinstance(reason, str)
    assert reason.isascii()
    assert "\x1b" not in reason
    assert len(reason) < 120


def test_snippet_cuts_and_escapes() -> None:
    assert snippet("abc") == "'abc'"
    assert snippet("é\n") == "'\\xe9\\n'"
    long = snippet("x" * 1000)
    assert long == repr("x" * SNIPPET_LENGTH) + "..."


def test_xff_entry_rejects_non_str() -> None:
    with pytest.raises(AddressError):
        parse_xff_entry(b"1.2.3.4")  # type: ignore[arg-type]


@PROPERTY
@given(st.text(max_size=60))
def test_xff_entry_is_an_address_or_an_address_error(text: str) -> None:
    try:
        ip, port = parse_xff_entry(text)
    except AddressError:
        return
    assert isinstance(ip, ADDRESS_TYPES)
    assert port is None or 0 <= port <= 65535
    assert parse_ip(str(ip)) == ip


def _address_like() -> st.SearchStrategy[str]:
    """Texts near the accept/refuse boundary: addresses in many spellings, mangled."""
    v4 = st.ip_addresses(v=4).map(str)
    v6 = st.ip_addresses(v=6).map(lambda ip: st.sampled_from([ip.compressed, ip.exploded, ip.exploded.upper()]))
    mapped = st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}")
    nat64 = st.ip_addresses(v=4).map(lambda ip: f"64:ff9b::{ip}")
    host = st.one_of(v4, v6.flatmap(lambda s: s), mapped, nat64)
    port = st.one_of(st.none(), st.integers(0, 70000).map(str), st.sampled_from(["", "+1", "0080", "_p", "٨"]))

    def render(h: str, p: str | None, bracket: bool) -> str:
        if bracket:
            h = f"[{h}]"
        return h if p is None else f"{h}:{p}"

    built = st.builds(render, host, port, st.booleans())
    mangled = st.tuples(built, st.integers(0, 40), st.sampled_from(["", " ", "0", ":", ".", "%", "]", "x", "\x00"]))
    return st.one_of(
        built,
        mangled.map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
        st.text(alphabet="0123456789abcdefABCDEF.:[]%_ ", max_size=45),
    )


@PROPERTY
@given(_address_like())
def test_fast_path_agrees_with_the_careful_path(text: str) -> None:
    try:
        expected: object = parse_xff_entry(text)
    except AddressError:
        expected = str
    got = parse_list_entry(text)
    assert (str if isinstance(got, str) else got) == expected


@PROPERTY
@given(st.one_of(_address_like(), st.text(alphabet="0123456789.:abcdef", max_size=45)))
def test_inet_pton_fast_path_accepts_exactly_what_ipaddress_accepts(text: str) -> None:
    assume("%" not in text)  # zone ids always take the careful path
    try:
        expected = parse_ip(text)
    except AddressError:
        expected = None
    assert _ip_fast(text) == expected


# --------------------------------------------------------------------------- Forwarded: nodes


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("192.0.2.43", Node(IPv4Address("192.0.2.43"))),
        ("192.0.2.43:47011", Node(IPv4Address("192.0.2.43"), 47011)),
        ("[2001:db8:cafe::17]", Node(IPv6Address("2001:db8:cafe::17"))),
        ("[2001:db8:cafe::17]:4711", Node(IPv6Address("2001:db8:cafe::17"), 4711)),
        ("[::ffff:192.0.2.43]:80", Node(IPv4Address("192.0.2.43"), 80)),
        ("2001:db8:cafe::17", Node(IPv6Address("2001:db8:cafe::17"))),  # lenient: bare IPv6
        ("unknown", Node(None, None, "unknown")),
        ("UNKNOWN", Node(None, None, "unknown")),
        ("unknown:1234", Node(None, 1234, "unknown")),
        ("_hidden", Node(None, None, "_hidden")),
        ("_SEVKISEK", Node(None, None, "_SEVKISEK")),
        ("_hidden:_port", Node(None, "_port", "_hidden")),
        ("192.0.2.43:_p1", Node(IPv4Address("192.0.2.43"), "_p1")),
        ("[2001:db8::1]:_x.y-z", Node(IPv6Address("2001:db8::1"), "_x.y-z")),
    ],
)
def test_rfc7239_node_forms(text: str, node: Node) -> None:
    assert parse_node(text) == node
    assert parse_node(text).is_address == (node.ip is not None)


@pytest.mark.parametrize(
    "text",
    [
        "", "_", "_a b", "_a/b", "[1.2.3.4]", "[::1", "[::1]:", "[::1]:x", "[::1]80", "1.2.3.4:99999", "1.2.3.4:_",
        "example.com", "<script>", "unknown:", "unknown:x", "1.2.3.4:80:90", "__\u00e9", "1.2.3.4%eth0",
        "[fe80::1%<x>]", "_" + "a" * 100,
    ],
)  # fmt: skip
def test_bad_nodes_raise_address_error(text: str) -> None:
    with pytest.raises(AddressError):
        parse_node(text)


# --------------------------------------------------------------------------- Forwarded: elements


def _for(element: ForwardedElement) -> object:
    assert element.error is None, element.error
    return element.for_


def test_rfc7239_section_4_examples() -> None:
    assert parse_forwarded('for="_gazonk"') == [ForwardedElement(Node(None, None, "_gazonk"))]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711"') == [
        ForwardedElement(Node(IPv6Address("2001:db8:cafe::17"), 4711))
    ]
    assert parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        ForwardedElement(Node(IPv4Address("192.0.2.60")), Node(IPv4Address("203.0.113.43")), "http")
    ]
    assert [_for(e) for e in parse_forwarded("for=192.0.2.43, for=198.51.100.17")] == [
        Node(IPv4Address("192.0.2.43")),
        Node(IPv4Address("198.51.100.17")),
    ]


def test_rfc7239_section_7_examples_with_unknown_and_obfuscated() -> None:
    elements = parse_forwarded('for=192.0.2.43,for="[2001:db8:cafe::17]",for=unknown')
    assert [_for(e) for e in elements] == [
        Node(IPv4Address("192.0.2.43")),
        Node(IPv6Address("2001:db8:cafe::17")),
        Node(None, None, "unknown"),
    ]
    assert [_for(e) for e in parse_forwarded("for=_hidden, for=_SEVKISEK")] == [
        Node(None, None, "_hidden"),
        Node(None, None, "_SEVKISEK"),
    ]


def test_parameter_names_are_case_insensitive() -> None:
    [element] = parse_forwarded('FOR=192.0.2.1;By="[::1]";PrOtO=HTTPS;HOST=Example.COM')
    assert element == ForwardedElement(Node(IPv4Address("192.0.2.1")), Node(IPv6Address("::1")), "https", "example.com")


def test_quoted_strings_with_escapes_are_unescaped() -> None:
    [element] = parse_forwarded(r'for="192.0.2.\43";proto="ht\tp";host="ex\ample.com:8\080"')
    assert element == ForwardedElement(Node(IPv4Address("192.0.2.43")), None, "http", "example.com:8080")


def test_commas_and_semicolons_inside_quotes_do_not_split() -> None:
    elements = parse_forwarded('ext="a,b;c=d";for=192.0.2.1, for=198.51.100.2;ext2="x, y"')
    assert [_for(e) for e in elements] == [Node(IPv4Address("192.0.2.1")), Node(IPv4Address("198.51.100.2"))]


def test_escaped_quote_and_escaped_backslash_keep_boundaries_right() -> None:
    # ext="a\",b" is one string holding a quote and a comma; ext="a\\" ends in a backslash.
    elements = parse_forwarded(r'ext="a\",b";for=192.0.2.1, ext="a\\";for=192.0.2.2, for=192.0.2.3')
    assert [_for(e) for e in elements] == [Node(IPv4Address(f"192.0.2.{i}")) for i in (1, 2, 3)]


def test_optional_whitespace_around_commas_and_semicolons() -> None:
    elements = parse_forwarded(" for=192.0.2.1 ; proto=https ,\tfor=192.0.2.2 ")
    assert elements == [
        ForwardedElement(Node(IPv4Address("192.0.2.1")), None, "https"),
        ForwardedElement(Node(IPv4Address("192.0.2.2"))),
    ]


def test_empty_pairs_are_allowed_by_the_grammar() -> None:
    assert parse_forwarded("for=192.0.2.1;;proto=http;") == [
        ForwardedElement(Node(IPv4Address("192.0.2.1")), None, "http")
    ]


def test_element_without_for_is_valid_but_has_no_node() -> None:
    assert parse_forwarded("proto=https;by=_lb") == [ForwardedElement(None, Node(None, None, "_lb"), "https")]


def test_extension_parameters_are_ignored() -> None:
    assert parse_forwarded('for=192.0.2.1;secret=abc;x-y="z"') == [ForwardedElement(Node(IPv4Address("192.0.2.1")))]


def test_nginx_style_unquoted_ipv6_and_ports_are_accepted() -> None:
    # nginx "for=$remote_addr" writes IPv6 addresses bare; RFC 7239 wants them quoted.
    assert _for(parse_forwarded("for=2001:db8::1")[0]) == Node(IPv6Address("2001:db8::1"))
    assert _for(parse_forwarded("for=192.0.2.1:8080")[0]) == Node(IPv4Address("192.0.2.1"), 8080)
    assert _for(parse_forwarded("for=[2001:db8::1]:80")[0]) == Node(IPv6Address("2001:db8::1"), 80)


def test_mapped_and_nat64_nodes() -> None:
    assert _for(parse_forwarded('for="[::ffff:192.0.2.1]"')[0]) == Node(IPv4Address("192.0.2.1"))
    assert _for(parse_forwarded('for="[64:ff9b::192.0.2.1]"')[0]) == Node(IPv6Address("64:ff9b::c000:201"))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("for=192.0.2.1;for=192.0.2.2", "for= given twice"),
        ("for=192.0.2.1;FOR=192.0.2.2", "for= given twice"),
        ("proto=http;for=192.0.2.1;Proto=https", "proto= given twice"),
        ("ext=1;ext=2;for=192.0.2.1", "ext= given twice"),
        ("for", "bad syntax"),
        ("for=", "bad syntax"),
        ("=192.0.2.1", "bad syntax"),
        ("for = 192.0.2.1", "bad syntax"),
        ('for="192.0.2.1', "bad syntax"),
        ('for=192.0.2.1"x"', "bad syntax"),
        ('for="192.0.2.1"x', "bad syntax"),
        ("for=192.0.2.1 junk", "bad syntax"),
        ("for=192.0.2.1\x00", "bad syntax"),
        ("for=192.0.2.1\r\n", "bad syntax"),
        ('for="192.0.2.1\x7f"', "bad syntax"),
        ('for="192.0.2.1é"', "bad syntax"),
        ("for=١٩٢.٠.٢.١", "bad syntax"),
        ("for=<script>", "bad node"),
        ('for="<script>alert(1)</script>"', "bad node"),
        ('for="[192.0.2.1]"', "bad node"),
        ('for="2001:db8::1]:80"', "bad node"),
        ("for=192.0.2.1:99999", "bad node"),
        ("by=not-an-address;for=192.0.2.1", "bad node"),
        (";".join(f"p{i}=1" for i in range(17)), "too many parameters"),
    ],
)
def test_malformed_elements_carry_an_error_and_nothing_else(value: str, why: str) -> None:
    [element] = parse_forwarded(value)
    assert element.malformed
    assert why in str(element.error)
    assert (element.for_, element.by, element.proto, element.host) == (None, None, None, None)


def test_empty_elements_are_kept_as_malformed() -> None:
    elements = parse_forwarded("for=192.0.2.1,, for=192.0.2.2")
    assert [e.error for e in elements] == [None, "empty element", None]


@pytest.mark.parametrize("proto", ["<script>", "1http", "ht tp", "http:", "", "a" * 40, "h\u00e9"])
def test_invalid_proto_is_dropped_not_passed_through(proto: str) -> None:
    quoted = proto.replace("\\", "\\\\").replace('"', '\\"')
    [element] = parse_forwarded(f'for=192.0.2.1;proto="{quoted}"')
    if not proto.isascii():
        assert element.malformed  # non-ASCII never gets as far as the scheme check
        return
    assert element == ForwardedElement(Node(IPv4Address("192.0.2.1")))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com:8080"),
        ("[2001:DB8::1]:443", "[2001:db8::1]:443"),
        ("192.0.2.1", "192.0.2.1"),
        ("internal_host.local.", "internal_host.local."),
        ("<script>", None),
        ("a b", None),
        ("ex%41mple.com", None),
        ("example.com:99999", None),
        ("example.com:", None),
        ("[192.0.2.1]", None),
        ("[::1", None),
        ("user@example.com", None),
        ("example.com/path", None),
        ("a" * 300, None),
        ("'; DROP TABLE x; --", None),
    ],
)
def test_host_is_validated_and_lower_cased(host: str, expected: str | None) -> None:
    quoted = host.replace("\\", "\\\\").replace('"', '\\"')
    [element] = parse_forwarded(f'for=192.0.2.1;host="{quoted}"')
    assert element.error is None
    assert element.host == expected
    assert element.for_ == Node(IPv4Address("192.0.2.1"))  # a bad host= never sinks the element


@pytest.mark.parametrize(
    ("text", "expected"),
    [("https", "https"), ("HTTP", "http"), ("wss", "wss"), ("coap+tcp", "coap+tcp"), ("x-y.z", "x-y.z"),
     (" https", None), ("https ", None), ("", None), ("1http", None), ("ht_tp", None), ("<script>", None),
     ("https\x00", None), ("\u212aa", None), ("a" * 33, None)],
)  # fmt: skip
def test_parse_proto(text: str, expected: str | None) -> None:
    assert parse_proto(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Example.COM", "example.com"), ("example.com:443", "example.com:443"), ("[::1]", "[::1]"),
     ("[::FFFF:1.2.3.4]:80", "[::ffff:1.2.3.4]:80"), (" example.com", None), ("example.com\r\nX: y", None),
     ("[::1]]", None), ("[1.2.3.4]", None), ("[::1]:65536", None), ("\u212aey.example", None), ("", None),
     ("exa mple.com", None), ("example.com:-1", None), ("a:b:c", None)],
)  # fmt: skip
def test_parse_host(text: str, expected: str | None) -> None:
    assert parse_host(text) == expected


def test_unbalanced_quote_planted_on_the_left_cannot_swallow_the_proxies_elements() -> None:
    # A left-to-right parser reads one long malformed element here.
    elements = parse_forwarded('for="abc, for=192.0.2.1, for=10.0.0.1')
    assert [e.error is None for e in elements] == [False, True, True]
    assert _for(elements[-2]) == Node(IPv4Address("192.0.2.1"))


def test_forwarded_rightmost_stray_quote_makes_the_rightmost_element_malformed() -> None:
    elements = parse_forwarded('for=192.0.2.1, for="10.0.0.1')
    assert elements[-1].malformed


def test_blank_forwarded_has_no_elements() -> None:
    assert parse_forwarded("") == []
    assert parse_forwarded(" \t ") == []
    assert list(rsplit_forwarded("")) == []


def test_rsplit_forwarded_yields_rightmost_first() -> None:
    assert list(rsplit_forwarded('for=a, for="b,c";x=y,for=d')) == ["for=d", ' for="b,c";x=y', "for=a"]


@pytest.mark.parametrize("quoted", [False, True])
def test_forwarded_count_cap_keeps_the_rightmost_and_marks_the_cut(quoted: bool) -> None:
    one = 'for="192.0.2.1"' if quoted else "for=192.0.2.1"
    elements = parse_forwarded(", ".join([one] * (MAX_ENTRIES + 5)))
    assert len(elements) == MAX_ENTRIES + 1
    assert elements[0] == ForwardedElement(error=f"more than {MAX_ENTRIES} elements")
    assert all(e.for_ == Node(IPv4Address("192.0.2.1")) for e in elements[1:])


@pytest.mark.parametrize("quoted", [False, True])
def test_forwarded_length_cap_drops_the_partial_element(quoted: bool) -> None:
    pad = 'ext="' + "x" * MAX_HEADER_LENGTH + '"' if quoted else "ext=" + "x" * MAX_HEADER_LENGTH
    elements = parse_forwarded(pad + ", for=192.0.2.1")
    assert elements == [
        ForwardedElement(error=f"header longer than {MAX_HEADER_LENGTH} characters"),
        ForwardedElement(Node(IPv4Address("192.0.2.1"))),
    ]


def test_forwarded_cut_inside_a_quoted_string_is_a_cut_not_a_misparse() -> None:
    # The cut lands inside a quoted string whose opening quote is beyond the cap;
    # reading the rest as if unquoted would find the fake element "for=6.6.6.6".
    value = 'ext="' + "x" * MAX_HEADER_LENGTH + ', for=6.6.6.6";for=192.0.2.1'
    elements = parse_forwarded(value)
    assert elements == [ForwardedElement(error=f"header longer than {MAX_HEADER_LENGTH} characters")]


# --------------------------------------------------------------------------- Forwarded: properties


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _encode(value: str, force_quotes: bool) -> str:
    if not force_quotes and _TOKEN_RE.match(value):
        return value
    return _quote(value)


@st.composite
def _node(draw: st.DrawFn) -> tuple[str, Node]:
    obf = st.from_regex(r"_[A-Za-z0-9._-]{1,12}", fullmatch=True)
    kind = draw(st.sampled_from(["v4", "v6", "unknown", "obf"]))
    port: int | str | None = draw(st.one_of(st.none(), st.integers(0, 65535), obf))
    if kind == "v4":
        ip = draw(st.ip_addresses(v=4))
        text, node = str(ip), Node(ip, port)
    elif kind == "v6":
        ip6 = draw(st.ip_addresses(v=6))
        text, node = f"[{ip6}]", Node(ip6.ipv4_mapped or ip6, port)
    elif kind == "unknown":
        text, node = draw(st.sampled_from(["unknown", "Unknown"])), Node(None, port, "unknown")
    else:
        name = draw(obf)
        text, node = name, Node(None, port, name)
    if port is not None:
        text = f"{text}:{port}"
    return text, node


_SCHEMES = st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,10}", fullmatch=True)
_HOSTS = st.from_regex(r"[A-Za-z0-9_.-]{1,20}(:[0-9]{1,4})?", fullmatch=True)
_ANY_ASCII = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@st.composite
def _element(draw: st.DrawFn) -> tuple[str, ForwardedElement]:
    """An element as a proxy could write it, and what parsing it must give."""
    params: list[tuple[str, str]] = []
    for_ = by = None
    proto = host = None
    if draw(st.booleans()):
        text, for_ = draw(_node())
        params.append(("for", text))
    if draw(st.booleans()):
        text, by = draw(_node())
        params.append(("by", text))
    if draw(st.booleans()):
        scheme = draw(_SCHEMES)
        params.append(("proto", scheme))
        proto = scheme.lower()
    if draw(st.booleans()):
        h = draw(_HOSTS)
        params.append(("host", h))
        host = h.lower()
    for i in range(draw(st.integers(0, 2))):  # extensions with anything quotable in them
        params.append((f"ext{i}", draw(_ANY_ASCII)))
    if not params:
        params.append(("proto", "http"))
        proto = "http"
    params = draw(st.permutations(params))
    pairs = []
    for name, value in params:
        name = draw(st.sampled_from([name, name.upper(), name.capitalize()]))
        pairs.append(f"{name}={_encode(value, draw(st.booleans()))}")
    separator = draw(st.sampled_from([";", "; ", " ;"]))
    return separator.join(pairs), ForwardedElement(for_, by, proto, host)


@PROPERTY
@given(st.lists(_element(), min_size=1, max_size=8), st.sampled_from([",", ", ", " ,\t"]))
def test_forwarded_round_trip(elements: list[tuple[str, ForwardedElement]], comma: str) -> None:
    value = comma.join(text for text, _ in elements)
    assert parse_forwarded(value) == [expected for _, expected in elements]


@PROPERTY
@given(st.lists(_element(), min_size=1, max_size=4), st.text(max_size=60))
def test_client_garbage_on_the_left_never_changes_the_proxies_elements(
    elements: list[tuple[str, ForwardedElement]], garbage: str
) -> None:
    # Whatever the client sent (unbalanced quotes, backslashes, anything), the
    # elements proxies appended after it parse the same.
    value = garbage + ", " + ", ".join(text for text, _ in elements)
    assume(len(value) <= MAX_HEADER_LENGTH)
    parsed = parse_forwarded(value)
    assert parsed[-len(elements) :] == [expected for _, expected in elements]


_FORWARDED_ALPHABET = st.one_of(
    st.sampled_from([*'=;,"\\ \t_[]:.', "for", "by", "proto", "host", "unknown", "1.2.3.4", "::1"]),
    st.characters(),
)


@PROPERTY
@given(st.lists(_FORWARDED_ALPHABET, max_size=40).map("".join))
def test_parse_forwarded_never_raises_and_yields_only_checked_values(value: str) -> None:
    elements = parse_forwarded(value)
    for element in elements:
        assert isinstance(element, ForwardedElement)
        if element.malformed:
            assert (element.for_, element.by, element.proto, element.host) == (None, None, None, None)
            assert element.error is not None
            assert element.error.isascii()
            continue
        for node in (element.for_, element.by):
            if node is None:
                continue
            assert (node.ip is None) != (node.name is None)
            assert node.ip is None or isinstance(node.ip, ADDRESS_TYPES)
            assert node.name is None or node.name == "unknown" or re.fullmatch(r"_[A-Za-z0-9._-]+", node.name)
            assert node.port is None or isinstance(node.port, (int, str))
        assert element.proto is None or re.fullmatch(r"[a-z][a-z0-9+.-]*", element.proto)
        assert element.host is None or re.fullmatch(r"[a-z0-9_.\-\[\]:]+", element.host)


@PROPERTY
@given(st.text(max_size=30))
def test_parse_forwarded_element_never_raises(text: str) -> None:
    assert isinstance(parse_forwarded_element(text), ForwardedElement)


@PROPERTY
@given(st.lists(st.sampled_from(['"', "\\", ",", "a", "=", " "]), max_size=60).map("".join))
def test_rsplit_forwarded_pieces_cover_the_value(value: str) -> None:
    pieces = list(rsplit_forwarded(value))
    texts = [p for p in pieces if isinstance(p, str)]
    assert all(isinstance(p, Cut) for p in pieces if not isinstance(p, str))
    if value.strip(" \t"):
        assert ",".join(reversed(texts)) == value  # short values: nothing cut, nothing lost
