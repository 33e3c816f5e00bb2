"""Strategies on the traps docs/security.md lists: the one safe walk, hop counts, single headers."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realip import ConfigError
from realip.address import AddressError, IPAddress, TrustedNetworks, parse_ip
from realip.forwarding import MAX_ENTRIES, MAX_HEADER_LENGTH, parse_xff_entry, split_list
from realip.strategies import (
    SINGLE_ADDRESS_HEADERS,
    Decision,
    HopCount,
    RightmostUntrusted,
    SingleHeader,
    _make,
    strategy_from_name,
)

PROPERTY = settings(max_examples=300, deadline=None)
ADDRESS_TYPES = (IPv4Address, IPv6Address)
TRUSTED = TrustedNetworks.parse("10.0.0.0/8, 2001:db8:ffff::/48", option="trusted_proxies")

CLIENT = IPv4Address("203.0.113.5")
P1 = IPv4Address("10.0.0.1")
P2 = IPv4Address("10.0.0.2")

XFF = RightmostUntrusted()
FWD = RightmostUntrusted("forwarded")


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def test_fast_decision_constructor_builds_an_equal_decision() -> None:
    made = _make(CLIENT, 80, (P1,), "why", "https", "example.com")
    assert made == Decision(CLIENT, 80, (P1,), "why", "https", "example.com")
    assert hash(made) == hash(Decision(CLIENT, 80, (P1,), "why", "https", "example.com"))
    with pytest.raises(AttributeError):
        made.ip = P1  # type: ignore[misc]


# --------------------------------------------------------------------------- RightmostUntrusted, X-Forwarded-For


def test_default_strategy_reads_x_forwarded_for() -> None:
    assert XFF.header == "x-forwarded-for"
    assert RightmostUntrusted("X-Forwarded-For") == XFF


def test_single_appending_proxy_gives_the_client() -> None:
    assert XFF.decide("203.0.113.5", TRUSTED) == Decision(CLIENT, None, (), None)


def test_leftmost_client_forged_entry_is_never_believed() -> None:
    # uvicorn with forwarded_allow_ips="*" returns the leftmost entry: "6.6.6.6" here.
    assert XFF.decide("6.6.6.6, 203.0.113.5", TRUSTED) == Decision(CLIENT, None, (), None)


def test_trusted_entries_are_skipped_and_reported_as_hops_in_header_order() -> None:
    decision = XFF.decide("6.6.6.6, 203.0.113.5, 10.0.0.2, 10.0.0.1", TRUSTED)
    assert decision == Decision(CLIENT, None, (P2, P1), None)


def test_all_trusted_gives_the_leftmost() -> None:
    assert XFF.decide("10.0.0.3, 10.0.0.2, 10.0.0.1", TRUSTED) == Decision(ip("10.0.0.3"), None, (P2, P1), None)


@pytest.mark.parametrize("garbage", ["<script>", "", "unknown", "_hidden", "example.com", "1.2.3.4\x00", "١.٢.٣.٤"])
def test_garbage_stops_the_walk_at_the_last_trusted_hop(garbage: str) -> None:
    decision = XFF.decide(f"203.0.113.5, {garbage}, 10.0.0.2, 10.0.0.1", TRUSTED)
    # Never skip past garbage to what lies left of it.
    assert decision.ip == P2
    assert decision.hops == (P1,)
    assert decision.error is not None
    assert decision.error.startswith("invalid entry ")


def test_rightmost_garbage_declines() -> None:
    decision = XFF.decide("203.0.113.5, <script>", TRUSTED)
    assert decision == Decision(None, None, (), "invalid entry '<script>': not an IP address")


def test_trailing_empty_entry_declines() -> None:
    decision = XFF.decide("203.0.113.5,", TRUSTED)
    assert decision.ip is None
    assert decision.error == "invalid entry '': empty entry"


@pytest.mark.parametrize("absent", ["", " ", "\t"])
def test_absent_header_is_a_plain_decline_with_a_reason(absent: str) -> None:
    assert XFF.decide(absent, TRUSTED) == Decision(None, None, (), "missing header")
    assert FWD.decide(absent, TRUSTED) == Decision(None, None, (), "missing header")


@pytest.mark.parametrize(
    ("entry", "client", "port"),
    [
        ("203.0.113.5:5678", "203.0.113.5", 5678),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("2001:db8::1", "2001:db8::1", None),
        ("::ffff:203.0.113.5", "203.0.113.5", None),
        ("[::ffff:203.0.113.5]:80", "203.0.113.5", 80),
        ("64:ff9b::203.0.113.5", "64:ff9b::cb00:7105", None),
    ],
)
def test_entries_with_ports_brackets_mapped_and_nat64_forms(entry: str, client: str, port: int | None) -> None:
    assert XFF.decide(f"6.6.6.6, {entry}, 10.0.0.1", TRUSTED) == Decision(ip(client), port, (P1,), None)


def test_trusted_network_matches_a_mapped_entry() -> None:
    # A trusted 10.0.0.0/8 must match a hop written as ::ffff:10.0.0.1.
    assert XFF.decide("203.0.113.5, ::ffff:10.0.0.1", TRUSTED) == Decision(CLIENT, None, (P1,), None)


def test_decision_ip_is_an_address_object_never_text() -> None:
    decision = XFF.decide("2001:DB8:0::1", TRUSTED)
    assert isinstance(decision.ip, IPv6Address)
    assert str(decision.ip) == "2001:db8::1"


def test_client_padding_the_left_beyond_the_caps_changes_nothing() -> None:
    for padding in ("6.6.6.6," * 2000, "x" * (3 * MAX_HEADER_LENGTH) + ","):
        assert XFF.decide(padding + "203.0.113.5, 10.0.0.1", TRUSTED) == Decision(CLIENT, None, (P1,), None)


def test_walk_reaching_the_entry_cap_stops_there() -> None:
    value = "203.0.113.5, " + ", ".join(["10.0.0.1"] * (MAX_ENTRIES + 1))
    decision = XFF.decide(value, TRUSTED)
    assert decision.ip == P1  # the last trusted hop walked, never 203.0.113.5 beyond the cut
    assert len(decision.hops) == MAX_ENTRIES - 1
    assert decision.error == f"more than {MAX_ENTRIES} entries"


def test_walk_reaching_the_length_cut_stops_there() -> None:
    decision = XFF.decide("203.0.113.5" + " " * MAX_HEADER_LENGTH + ", 10.0.0.1", TRUSTED)
    assert decision == Decision(P1, None, (), f"header longer than {MAX_HEADER_LENGTH} characters")


def test_error_is_short_and_log_safe() -> None:
    decision = XFF.decide("\x1b[31m\r\nX-Admin: 1" + "A" * 5000 + ", 10.0.0.1", TRUSTED)
    assert decision.ip == P1
    assert decision.error is not None
    assert decision.error.isascii()
    assert "\x1b" not in decision.error
    assert "\r" not in decision.error
    assert len(decision.error) < 120


def test_non_str_value_is_a_decline_not_an_exception() -> None:
    decision = XFF.decide(b"203.0.113.5", TRUSTED)  # type: ignore[arg-type]
    assert decision.ip is None
    assert decision.error == "internal error: TypeError"


def test_custom_list_header() -> None:
    strategy = RightmostUntrusted("X-Original-Forwarded-For")
    assert strategy.header == "x-original-forwarded-for"
    assert strategy.decide("203.0.113.5, 10.0.0.1", TRUSTED).ip == CLIENT


# --------------------------------------------------------------------------- RightmostUntrusted, Forwarded


def test_forwarded_gives_client_port_proto_and_host_of_the_chosen_element() -> None:
    value = 'for=6.6.6.6;proto=http, For="[2001:db8::1]:4711";Proto=HTTPS;Host="Example.com", for=10.0.0.1;proto=http'
    assert FWD.decide(value, TRUSTED) == Decision(ip("2001:db8::1"), 4711, (P1,), None, "https", "example.com")


def test_forwarded_all_trusted_gives_the_leftmost_element() -> None:
    decision = FWD.decide("for=10.0.0.3;proto=https, for=10.0.0.2, for=10.0.0.1", TRUSTED)
    assert decision == Decision(ip("10.0.0.3"), None, (P2, P1), None, "https")


@pytest.mark.parametrize(
    ("element", "why"),
    [
        ("for=unknown", "for='unknown' is not an address"),
        ('for="_hidden"', "for='_hidden' is not an address"),
        ("proto=https", "element without for="),
        ("for=192.0.2.1;for=192.0.2.2", "for= given twice"),
        ("for=<script>", "bad node"),
        ("", "empty element"),
    ],
)
def test_forwarded_marker_or_malformed_element_stops_the_walk(element: str, why: str) -> None:
    value = f"for=203.0.113.5, {element}, for=10.0.0.2;proto=https;host=a.example, for=10.0.0.1"
    decision = FWD.decide(value, TRUSTED)
    assert (decision.ip, decision.hops, decision.proto, decision.host) == (P2, (P1,), "https", "a.example")
    assert decision.error is not None
    assert why in decision.error


def test_forwarded_obfuscated_port_is_no_port() -> None:
    assert FWD.decide('for="203.0.113.5:_p1"', TRUSTED) == Decision(CLIENT, None, (), None)


def test_forwarded_unbalanced_quote_from_the_client_does_not_hide_the_client() -> None:
    # A left-to-right parser sees one malformed element and falls back to the proxy.
    value = 'for="6.6.6.6, for=203.0.113.5, for=10.0.0.1'
    assert FWD.decide(value, TRUSTED) == Decision(CLIENT, None, (P1,), None)


def test_forwarded_hostile_host_from_the_client_does_not_sink_its_element() -> None:
    value = 'for=203.0.113.5;host="<script>";proto=https, for=10.0.0.1'
    assert FWD.decide(value, TRUSTED) == Decision(CLIENT, None, (P1,), None, "https", None)


def test_forwarded_padding_beyond_the_caps_changes_nothing() -> None:
    padding = 'for="x\\"' * 3000 + ", "
    assert FWD.decide(padding + "for=203.0.113.5, for=10.0.0.1", TRUSTED) == Decision(CLIENT, None, (P1,), None)


def test_forwarded_walk_reaching_the_cap_stops_there() -> None:
    value = "for=203.0.113.5, " + ", ".join(['for="10.0.0.1"'] * (MAX_ENTRIES + 1))
    decision = FWD.decide(value, TRUSTED)
    assert decision.ip == P1
    assert decision.error == f"more than {MAX_ENTRIES} elements"


# --------------------------------------------------------------------------- HopCount


def test_hop_count_one_is_the_rightmost_entry_not_off_by_one() -> None:
    # python-ipware takes the wrong entry behind a single appending proxy.
    assert HopCount("x-forwarded-for", 1).decide("6.6.6.6, 203.0.113.5", TRUSTED) == Decision(CLIENT, None, (), None)


def test_hop_count_takes_the_nth_from_the_right_ignoring_trust() -> None:
    strategy = HopCount("x-forwarded-for", 3)
    decision = strategy.decide("6.6.6.6, 203.0.113.5, 198.51.100.7, 10.0.0.1", TRUSTED)
    assert decision == Decision(CLIENT, None, (ip("198.51.100.7"), P1), None)


def test_hop_count_fails_with_fewer_entries() -> None:
    decision = HopCount("x-forwarded-for", 3).decide("203.0.113.5, 10.0.0.1", TRUSTED)
    assert decision == Decision(None, None, (), "expected 3 entries, found 2")


def test_hop_count_declines_on_garbage_among_the_counted_entries() -> None:
    decision = HopCount("x-forwarded-for", 2).decide("203.0.113.5, <x>", TRUSTED)
    assert decision.ip is None
    assert decision.error == "invalid entry '<x>': not an IP address"
    decision = HopCount("x-forwarded-for", 2).decide("<x>, 10.0.0.1", TRUSTED)
    assert decision.ip is None


def test_hop_count_ignores_garbage_left_of_the_nth_entry() -> None:
    assert HopCount("x-forwarded-for", 1).decide("<x>, , 203.0.113.5:80", TRUSTED) == Decision(CLIENT, 80, (), None)


def test_hop_count_padding_beyond_the_caps_changes_nothing() -> None:
    value = "6.6.6.6," * 3000 + "203.0.113.5, 10.0.0.1"
    assert HopCount("x-forwarded-for", 2).decide(value, TRUSTED) == Decision(CLIENT, None, (P1,), None)


def test_hop_count_nth_entry_beyond_the_length_cut_fails() -> None:
    value = "203.0.113.5," + " " * MAX_HEADER_LENGTH + "10.0.0.1"
    decision = HopCount("x-forwarded-for", 2).decide(value, TRUSTED)
    assert decision == Decision(None, None, (), f"header longer than {MAX_HEADER_LENGTH} characters")


def test_hop_count_over_forwarded() -> None:
    strategy = HopCount("Forwarded", 2)
    value = 'for=6.6.6.6, for="[2001:db8::1]:4711";proto=https, for=10.0.0.1'
    assert strategy.decide(value, TRUSTED) == Decision(ip("2001:db8::1"), 4711, (P1,), None, "https")
    assert strategy.decide("for=10.0.0.1", TRUSTED).error == "expected 2 entries, found 1"
    assert strategy.decide("for=203.0.113.5, for=_lb", TRUSTED).error == "for='_lb' is not an address"


def test_hop_count_absent_header() -> None:
    assert HopCount("x-forwarded-for", 1).decide("", TRUSTED) == Decision(None, None, (), "missing header")


@pytest.mark.parametrize("hops", [0, -1, MAX_ENTRIES + 1, True, "2", 2.0, None])
def test_hop_count_rejects_bad_counts(hops: object) -> None:
    with pytest.raises(ConfigError) as info:
        HopCount("x-forwarded-for", hops)  # type: ignore[arg-type]
    assert info.value.option == "hops"


# --------------------------------------------------------------------------- SingleHeader


@pytest.mark.parametrize(
    ("value", "client", "port"),
    [
        ("203.0.113.5", "203.0.113.5", None),
        (" 203.0.113.5 ", "203.0.113.5", None),
        ("203.0.113.5:1234", "203.0.113.5", 1234),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("[2001:db8::1]", "2001:db8::1", None),
        ("::ffff:203.0.113.5", "203.0.113.5", None),
    ],
)
def test_single_header_takes_exactly_one_address(value: str, client: str, port: int | None) -> None:
    assert SingleHeader("X-Real-IP").decide(value, TRUSTED) == Decision(ip(client), port, (), None)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("203.0.113.5, 6.6.6.6", "several values"),
        ("203.0.113.5,", "several values"),  # a second, empty instance
        ("unknown", "invalid entry"),
        ("<script>", "invalid entry"),
        ("203.0.113.5 6.6.6.6", "invalid entry"),
        ("", "missing header"),
    ],
)
def test_single_header_declines_anything_but_one_address(value: str, why: str) -> None:
    decision = SingleHeader("cf-connecting-ip").decide(value, TRUSTED)
    assert decision.ip is None
    assert decision.error is not None
    assert decision.error.startswith(why)


def test_single_header_refuses_forwarded() -> None:
    with pytest.raises(ConfigError) as info:
        SingleHeader("Forwarded")
    assert info.value.option == "header"


# --------------------------------------------------------------------------- header names


@pytest.mark.parametrize(
    "name",
    ["", "  ", "host", "Content-Length", "transfer-encoding", "cookie", "x-forwarded-proto", "x forwarded for",
     "x-forwarded-for\r\n", "x-forwarded-for:", "x_forwarded_for", "HTTP_X_FORWARDED_FOR", "x-réal-ip", "a" * 65,
     None, b"x-real-ip"],
)  # fmt: skip
@pytest.mark.parametrize("strategy", [RightmostUntrusted, SingleHeader, lambda name: HopCount(name, 1)])
def test_bad_header_names_are_config_errors_naming_the_header(name: object, strategy: object) -> None:
    with pytest.raises(ConfigError) as info:
        strategy(name)  # type: ignore[operator]
    assert info.value.option == "header"
    assert info.value.value == name


# --------------------------------------------------------------------------- strategy_from_name


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("x-forwarded-for", RightmostUntrusted("x-forwarded-for")),
        ("  X-Forwarded-For ", RightmostUntrusted("x-forwarded-for")),
        ("forwarded", RightmostUntrusted("forwarded")),
        ("rightmost:x-original-forwarded-for", RightmostUntrusted("x-original-forwarded-for")),
        ("rightmost: forwarded", RightmostUntrusted("forwarded")),
        ("x-forwarded-for:2", HopCount("x-forwarded-for", 2)),
        ("forwarded:1", HopCount("forwarded", 1)),
        ("x-forwarded-for : 3", HopCount("x-forwarded-for", 3)),
        ("x-real-ip", SingleHeader("x-real-ip")),
        ("CF-Connecting-IP", SingleHeader("cf-connecting-ip")),
        ("single:x-client-address", SingleHeader("x-client-address")),
        ("single:x-forwarded-for", SingleHeader("x-forwarded-for")),
    ],
)
def test_strategy_from_name(spec: str, expected: object) -> None:
    strategy = strategy_from_name(spec)
    assert strategy == expected
    assert strategy_from_name(str(strategy)) == strategy  # str() gives a spec back


def test_every_well_known_single_address_header_is_understood() -> None:
    for name in SINGLE_ADDRESS_HEADERS:
        assert strategy_from_name(name) == SingleHeader(name)


@pytest.mark.parametrize(
    "spec",
    ["", "x-custom", "host", "x-forwarded-for:0", "x-forwarded-for:65", "x-forwarded-for:-1", "x-forwarded-for:two",
     "x-forwarded-for:", ":2", "single:forwarded", "single:", "rightmost:", "rightmost:x-forwarded-for:2",
     "best:x-forwarded-for", "x_forwarded_for", "x-forwarded-for:99999999999999999999", "x-forwarded-for,x-real-ip"],
)  # fmt: skip
def test_strategy_from_name_errors_name_the_option_and_the_spec(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        strategy_from_name(spec, option="REALIP_STRATEGY")
    assert info.value.option == "REALIP_STRATEGY"
    assert info.value.value == spec
    assert "REALIP_STRATEGY" in str(info.value)


def test_strategy_from_name_rejects_non_str() -> None:
    with pytest.raises(ConfigError):
        strategy_from_name(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

_STRATEGIES = [
    XFF,
    FWD,
    HopCount("x-forwarded-for", 1),
    HopCount("x-forwarded-for", 3),
    HopCount("forwarded", 2),
    SingleHeader("x-real-ip"),
]

_HEADERISH = st.lists(
    st.one_of(
        st.sampled_from([",", ", ", ";", "=", '"', "\\", "for=", "unknown", "_x", "[", "]", ":", "%", " ", "\t"]),
        st.ip_addresses().map(str),
        st.characters(),
    ),
    max_size=30,
).map("".join)


@PROPERTY
@given(st.sampled_from(_STRATEGIES), _HEADERISH)
def test_decide_never_raises_and_gives_an_address_or_a_decline(strategy: object, value: str) -> None:
    decision = strategy.decide(value, TRUSTED)  # type: ignore[attr-defined]
    assert isinstance(decision, Decision)
    assert decision.ip is None or isinstance(decision.ip, ADDRESS_TYPES)
    assert decision.port is None or (isinstance(decision.port, int) and 0 <= decision.port <= 65535)
    assert all(isinstance(hop, ADDRESS_TYPES) for hop in decision.hops)
    assert decision.error is None or (decision.error.isascii() and len(decision.error) < 160)
    if decision.ip is None:
        assert decision.hops == ()
        assert decision.error is not None  # a decline always says why
    assert not decision.error or "internal error" not in decision.error


# A model of a header: each entry an address (trusted or not) or garbage.
_TRUSTED_ADDRESSES = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda n: IPv4Address(0x0A000000 + n)),
    st.integers(0, 2**80 - 1).map(lambda n: IPv6Address((0x20010DB8FFFF << 80) + n)),
)
_OTHER_ADDRESSES = (
    st.ip_addresses().map(lambda a: getattr(a, "ipv4_mapped", None) or a).filter(lambda a: a not in TRUSTED)
)
_GARBAGE = st.sampled_from(["", "unknown", "_hidden", "<script>", "1.2.3.4:99999", "::ffff:1.2.3.4:80", "x y"])


def _render(address: IPAddress, form: int) -> str:
    if form == 1:
        return f"[{address}]:8080" if address.version == 6 else f"{address}:8080"
    if form == 2 and address.version == 4:
        return f"::ffff:{address}"
    return str(address)


@st.composite
def _model(draw: st.DrawFn) -> list[IPAddress | str]:
    return draw(st.lists(st.one_of(_TRUSTED_ADDRESSES, _OTHER_ADDRESSES, _GARBAGE), min_size=1, max_size=MAX_ENTRIES))


def _reference_walk(model: list[IPAddress | str]) -> tuple[IPAddress | None, bool]:
    """the right-to-left walk (docs/security.md) on the model: (client or None, stopped at garbage)."""
    last_trusted = None
    for entry in reversed(model):
        if isinstance(entry, str):
            return last_trusted, True
        if entry not in TRUSTED:
            return entry, False
        last_trusted = entry
    return last_trusted, False


@PROPERTY
@given(_model(), st.data())
def test_rightmost_untrusted_matches_the_reference_walk(model: list[IPAddress | str], data: st.DataObject) -> None:
    texts = [e if isinstance(e, str) else _render(e, data.draw(st.integers(0, 2))) for e in model]
    decision = XFF.decide(", ".join(texts), TRUSTED)
    expected, stopped = _reference_walk(model)
    assert decision.ip == expected
    assert (decision.error is not None) == stopped


@PROPERTY
@given(_model())
def test_rightmost_untrusted_never_returns_an_entry_left_of_an_untrusted_or_invalid_one(
    model: list[IPAddress | str],
) -> None:
    decision = XFF.decide(",".join(str(e) for e in model), TRUSTED)
    if decision.ip is None:
        return
    # Everything right of the chosen entry was a valid, trusted address.
    chosen = len(model) - 1 - len(decision.hops)
    assert model[chosen] == decision.ip
    right = model[chosen + 1 :]
    assert all(not isinstance(e, str) and e in TRUSTED for e in right)
    assert tuple(right) == decision.hops


@PROPERTY
@given(_model())
def test_forwarded_walk_agrees_with_the_list_walk(model: list[IPAddress | str]) -> None:
    def element(entry: IPAddress | str) -> str:
        if isinstance(entry, str):
            return {"": "", "unknown": "for=unknown", "_hidden": "for=_hidden"}.get(entry, f'for="{entry}"')
        return f'for="[{entry}]"' if entry.version == 6 else f"for={entry}"

    list_decision = XFF.decide(",".join(str(e) for e in model), TRUSTED)
    forwarded_decision = FWD.decide(",".join(element(e) for e in model), TRUSTED)
    assert (forwarded_decision.ip, forwarded_decision.hops) == (list_decision.ip, list_decision.hops)
    assert (forwarded_decision.error is None) == (list_decision.error is None)


@PROPERTY
@given(st.lists(st.one_of(_TRUSTED_ADDRESSES, _OTHER_ADDRESSES), min_size=1, max_size=20), st.integers(1, 20))
def test_hop_count_returns_exactly_the_nth_from_the_right_or_declines(entries: list[IPAddress], hops: int) -> None:
    decision = HopCount("x-forwarded-for", hops).decide(", ".join(map(str, entries)), TRUSTED)
    if len(entries) >= hops:
        assert decision == Decision(entries[-hops], None, tuple(entries[len(entries) - hops + 1 :]), None)
    else:
        assert decision == Decision(None, None, (), f"expected {hops} entries, found {len(entries)}")


@PROPERTY
@given(_HEADERISH, st.integers(1, 4))
def test_hop_count_on_any_text_is_the_nth_entry_or_a_decline(value: str, hops: int) -> None:
    decision = HopCount("x-forwarded-for", hops).decide(value, TRUSTED)
    if decision.ip is None:
        return
    entries = split_list(value)
    assert len(entries) >= hops
    assert parse_xff_entry(entries[-hops]) == (decision.ip, decision.port)


@PROPERTY
@given(_HEADERISH)
def test_rightmost_untrusted_on_any_text_never_returns_anything_left_of_garbage(value: str) -> None:
    decision = XFF.decide(value, TRUSTED)
    if decision.ip is None:
        return
    entries = split_list(value)
    chosen = len(entries) - 1 - len(decision.hops)
    assert parse_xff_entry(entries[chosen]) == (decision.ip, decision.port)
    for text in entries[chosen + 1 :]:
        try:
            hop, _ = parse_xff_entry(text)
        except AddressError:  # pragma: no cover - would be a bug
            pytest.fail(f"walked past garbage {text!r}")
        assert hop in TRUSTED


def test_parse_ip_and_decision_agree_on_canonical_text() -> None:
    decision = XFF.decide("::FFFF:203.0.113.5", TRUSTED)
    assert decision.ip == parse_ip("203.0.113.5")
