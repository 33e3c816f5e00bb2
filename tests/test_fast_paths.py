"""The per-request fast paths give exactly the answers of the careful paths they stand in for.

The fast paths: C-library address parsing and formatting, integer
network matching, the texts walk of X-Forwarded-For, the fast Resolution constructor,
and the caches of realip.memory (per peer, per connection, per header text). Each is checked here
against the straightforward code it replaced, on generated inputs; and the caches
against a fresh middleware's first answer, with every cache bounded whatever the input.
No timings: tests/test_benchmarks.py only proves that the benchmark runs.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realip import RealIPMiddleware, RealIPWSGIMiddleware, Resolution, Source
from realip.address import AddressError, TrustedNetworks, ip_text, parse_ip, parse_ip_text
from realip.core import CACHE_SIZE, CACHED_VALUE_LENGTH, Resolver, peer_resolution
from realip.result import make_resolution
from realip.strategies import RightmostUntrusted
from realip.wsgi import ConnectionLookup

PROPERTY = settings(max_examples=400, deadline=None)
TRUSTED = TrustedNetworks.parse("10.0.0.0/8, 192.0.2.0/24, 2001:db8::/32", option="trusted_proxies")


# --------------------------------------------------------------------------- Resolution


def test_fast_resolution_constructor_builds_an_equal_resolution() -> None:
    fields = (("1.2.3.4", 5), ("::ffff:1.2.3.4", 5), "x-forwarded-for", ("10.0.0.1",), "why", None, None, "https", "h")
    made = make_resolution(*fields)
    built = Resolution(*fields)
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    assert make_resolution(None, None, Source.PEER) == Resolution(client=None, peer=None, source=Source.PEER)
    with pytest.raises(AttributeError):
        made.client = None  # type: ignore[misc]


# --------------------------------------------------------------------------- addresses

ADDRESSES = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
    # IPv4-compatible, mapped, NAT64 and zero-heavy addresses: where formatters differ
    st.integers(0, 2**32 - 1).map(lambda n: IPv6Address(n)),
    st.integers(0, 2**32 - 1).map(lambda n: IPv6Address((0xFFFF << 32) | n)),
    st.integers(0, 2**32 - 1).map(lambda n: IPv6Address((0x64FF9B << 96) | n)),
    st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xABCD]), min_size=8, max_size=8).map(
        lambda groups: IPv6Address(b"".join(g.to_bytes(2, "big") for g in groups))
    ),
)


@PROPERTY
@given(ADDRESSES)
def test_ip_text_is_str(ip: IPv4Address | IPv6Address) -> None:
    assert ip_text(ip) == str(ip)


def test_ip_text_of_scoped_and_foreign_addresses_is_str() -> None:
    scoped = IPv6Address("fe80::1%eth0")
    assert ip_text(scoped) == str(scoped) == "fe80::1%eth0"

    class Odd(IPv4Address):
        def __str__(self) -> str:
            return "odd"

    assert ip_text(Odd("1.2.3.4")) == "odd"


def _address_texts() -> st.SearchStrategy[object]:
    spelled = ADDRESSES.flatmap(
        lambda ip: st.sampled_from(
            [str(ip), ip.exploded, ip.exploded.upper(), f"::ffff:{ip}" if ip.version == 4 else str(ip)]
        )
    )
    mangled = st.tuples(
        spelled, st.integers(0, 40), st.sampled_from(["", " ", "0", ":", ".", "%", "%eth0", "x", "\x00", "٨"])
    )
    return st.one_of(
        spelled,
        mangled.map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
        st.text(alphabet="0123456789abcdefABCDEF.:%", max_size=50),
        st.sampled_from([None, 7, b"1.2.3.4", "", "fe80::1%eth0", "::ffff:1.2.3.4%eth0", "1.2.3.4%eth0"]),
    )


@PROPERTY
@given(_address_texts())
def test_parse_ip_text_agrees_with_parse_ip(text: Any) -> None:
    try:
        ip = parse_ip(text)
        expected: object = (str(ip), ip.version, int(ip))
    except AddressError:
        expected = None
    fast = parse_ip_text(text)
    assert fast is None or fast == expected  # None: the caller asks parse_ip
    if expected is not None and "%" not in text:
        assert fast == expected


@PROPERTY
@given(st.one_of(ADDRESSES, _address_texts()))
def test_trusted_networks_match_exactly_what_ipaddress_matches(value: Any) -> None:
    networks = TRUSTED.networks
    if isinstance(value, (IPv4Address, IPv6Address)):
        assert (value in TRUSTED) == any(value in n for n in networks)
        assert TRUSTED.contains_int(value.version, int(value)) == (value in TRUSTED)
        return
    try:
        ip = parse_ip(value)
    except AddressError:
        assert TRUSTED.contains_text(value) is False
        return
    assert TRUSTED.contains_text(value) == any(ip in n for n in networks)


@PROPERTY
@given(
    st.tuples(_address_texts(), st.one_of(st.integers(0, 65535), st.sampled_from(["80", "", None, "x", "+1", "0080"])))
)
def test_peer_resolution_is_what_it_was(peer: tuple[Any, Any]) -> None:
    def reference(peer: Any) -> Resolution:  # the implementation before the fast paths
        try:
            host, port = peer
            port = int(port) if port not in (None, "") else 0
            ip = parse_ip(host)
        except (AddressError, TypeError, ValueError):
            return Resolution(client=None, peer=peer, source=Source.PEER)
        source = Source.MAPPED if ip.version == 4 and ":" in host else Source.PEER
        return Resolution(client=(str(ip), port), peer=(host, port), source=source)

    assert peer_resolution(peer) == reference(peer)
    assert peer_resolution(peer) == reference(peer)  # again, from the host cache


# --------------------------------------------------------------------------- the X-Forwarded-For texts walk


def _entries() -> st.SearchStrategy[str]:
    trusted = st.sampled_from(["10.0.0.1", "10.255.0.9", "192.0.2.7", "2001:db8::1"])
    others = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
    odd = st.sampled_from(["", " ", "unknown", "_hidden", "1.2.3.4:80", "[2001:db8::1]:443", "010.0.0.1", "1.2.3",
                           "::ffff:10.0.0.1", "<x>", "10.0.0.1\t", " 203.0.113.5 "])  # fmt: skip
    return st.one_of(trusted, trusted, others, odd)


@PROPERTY
@given(st.lists(_entries(), max_size=70), st.sampled_from([",", ", ", " ,\t"]))
def test_texts_walk_answers_as_decide_does(entries: list[str], comma: str) -> None:
    value = comma.join(entries)
    strategy = RightmostUntrusted()
    fast = strategy._decide_texts(value, TRUSTED)
    if fast is None:
        return  # decide() answers; nothing to compare
    decision = strategy.decide(value, TRUSTED)
    assert decision.ip is not None and decision.error is None and decision.proto is None and decision.host is None
    assert fast == ((str(decision.ip), decision.port or 0), tuple(str(h) for h in decision.hops))


def test_texts_walk_takes_the_common_headers_and_declines_the_rest() -> None:
    strategy = RightmostUntrusted()
    assert strategy._decide_texts("203.0.113.5, 10.0.0.1", TRUSTED) == (("203.0.113.5", 0), ("10.0.0.1",))
    assert strategy._decide_texts("10.0.0.2,10.0.0.1", TRUSTED) == (("10.0.0.2", 0), ("10.0.0.1",))
    for declined in ("", " ", "1.2.3.4:80", "2001:db8::5", "junk, 10.0.0.1", ",".join(["10.0.0.1"] * 65)):
        assert strategy._decide_texts(declined, TRUSTED) is None
    assert RightmostUntrusted("forwarded")._decide_texts("1.2.3.4", TRUSTED) is None


@PROPERTY
@given(
    st.lists(_entries(), max_size=80),
    st.sampled_from([",", ", "]),
    st.sampled_from([0, 8000, 9000, 70000]),
)
def test_texts_walk_of_a_long_header_answers_as_decide_does(entries: list[str], comma: str, padding: int) -> None:
    """The walk also takes headers over 8 KiB or 64 entries: the same client, hops and
    reason as decide(), whether it stops before the cut or reaches it."""
    junk = ", ".join(f"198.51.{i >> 8 & 255}.{i & 255}" for i in range(padding // 12))
    value = comma.join([junk, *entries] if junk else entries)
    strategy = RightmostUntrusted()
    fast = strategy._walk_texts(value, TRUSTED)
    if fast is None:
        return  # decide() answers; nothing to compare
    decision = strategy.decide(value, TRUSTED)
    assert decision.ip is not None and decision.proto is None and decision.host is None
    assert fast == ((str(decision.ip), decision.port or 0), tuple(str(h) for h in decision.hops), decision.error)


def test_a_walk_that_reaches_the_cut_names_the_last_trusted_hop_and_why() -> None:
    strategy = RightmostUntrusted()
    every_entry_trusted = ", ".join(f"10.0.{i >> 8}.{i & 255}" for i in range(1, 1001))
    _, hops, why = strategy._walk_texts(every_entry_trusted, TRUSTED)  # type: ignore[misc]
    assert why == "header longer than 8192 characters" and len(hops) < 64
    padded = ", ".join(["203.0.113.9"] * 6000 + ["203.0.113.5", "10.0.0.1"])  # 76 KiB: stops before the cut
    assert strategy._walk_texts(padded, TRUSTED) == (("203.0.113.5", 0), ("10.0.0.1",), None)
    assert strategy._decide_texts(every_entry_trusted, TRUSTED) is None  # the strict walk still declines


@PROPERTY
@given(st.lists(_entries(), max_size=12), st.sampled_from(["x-forwarded-for", "forwarded", "x-forwarded-for:2"]))
def test_resolver_decides_as_it_did(entries: list[str], strategy: str) -> None:
    value = ", ".join(entries) if strategy != "forwarded" else ", ".join(f'for="{e}"' for e in entries)
    resolver = Resolver(_settings(strategy=strategy, trusted_proxies=TRUSTED.networks))
    base = peer_resolution(("::ffff:10.0.0.3", 4000))
    decision = resolver.strategy.decide(value, TRUSTED)
    if decision.ip is None:
        expected = base if decision.error in (None, "missing header") else Resolution(
            client=base.client, peer=base.peer, source=base.source, error=f"{resolver.header}: {decision.error}"
        )  # fmt: skip
    else:
        expected = Resolution(
            client=(str(decision.ip), decision.port or 0),
            peer=base.peer,
            source=resolver.header,  # type: ignore[arg-type]
            hops=(*(str(h) for h in decision.hops), "10.0.0.3"),
            error=f"{resolver.header}: {decision.error}" if decision.error else None,
        )
    assert resolver.apply(base, value) == expected
    assert resolver.apply(base, value) == expected  # cached
    other = peer_resolution(("::ffff:10.0.0.3", 4001))  # a new connection: the decision is reused
    decided = expected.source == resolver.header
    assert resolver.apply(other, value).client == (expected.client if decided else other.client)


def _settings(**options: Any) -> Any:
    from realip.config import Settings

    return Settings.build(environ={}, **options)


# --------------------------------------------------------------------------- the middlewares' caches


def _asgi_once(app: Any, client: Any, headers: list[tuple[str, str]]) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def nothing(*args: Any) -> Any:
        return {"type": "http.request"}

    scope = {"type": "http", "scheme": "http", "client": client,
             "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers]}  # fmt: skip
    app.app = inner
    asyncio.run(app(scope, nothing, nothing))
    return seen[0] if seen else scope


def _wsgi_once(app: Any, addr: str, port: str, headers: dict[str, str]) -> dict[str, Any]:
    environ = {"REMOTE_ADDR": addr, "REMOTE_PORT": port, "wsgi.url_scheme": "http", "HTTP_HOST": "backend",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}  # fmt: skip
    app.app = lambda environ, start_response: [b""]
    app(environ, lambda *a: None)
    return environ


OPTIONS = [
    {},
    {"trusted_proxies": "10.0.0.0/8"},
    {"trusted_proxies": "10.0.0.0/8", "strategy": "forwarded", "forwarded_proto": True},
    {"trusted_proxies": "10.0.0.0/8", "forwarded_proto": True, "forwarded_host": True},
    {"trusted_proxies": "10.0.0.0/8", "strip_untrusted_headers": False},
]
VALUES = ["203.0.113.5, 10.0.0.1", "198.51.100.7", "", "junk, 10.0.0.1", "203.0.113.5, 10.0.0.1", "198.51.100.7"]


@pytest.mark.parametrize("options", OPTIONS)
def test_a_keep_alive_connection_gets_the_answers_a_fresh_middleware_gives(options: dict) -> None:
    """Alternating header texts on one connection: every answer as if it were the first."""
    asgi = RealIPMiddleware(None, environ={}, **options)
    wsgi = RealIPWSGIMiddleware(None, environ={}, **options)
    for peer in (("::ffff:10.0.0.2", 4000), ("10.0.0.2", 4000), ("192.0.2.9", 4000)):
        for value in VALUES:
            header = "forwarded" if options.get("strategy") == "forwarded" else "x-forwarded-for"
            text = f"for={value.split(',')[0] or 'x'}" if header == "forwarded" else value
            headers = [(header, text), ("x-forwarded-proto", "https"), ("x-forwarded-host", "example.com")]
            fresh = _asgi_once(RealIPMiddleware(None, environ={}, **options), peer, headers)
            reused = _asgi_once(asgi, peer, headers)
            assert reused == fresh
            fresh_environ = _wsgi_once(
                RealIPWSGIMiddleware(None, environ={}, **options), peer[0], str(peer[1]), dict(headers)
            )
            reused_environ = _wsgi_once(wsgi, peer[0], str(peer[1]), dict(headers))
            assert reused_environ == fresh_environ


def test_a_connection_answer_gets_its_own_entry_per_connection() -> None:
    """The uvicorn integration's answer (one object per connection) is cached by identity."""
    asgi = RealIPMiddleware(None, environ={}, trusted_proxies="10.0.0.0/8")
    published: list[Resolution] = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        published.append(scope["extensions"]["realip"])

    asgi.app = inner
    for port, value in ((1, b"203.0.113.5"), (2, b"198.51.100.7"), (1, b"203.0.113.5"), (1, b"198.51.100.7")):
        connection = peer_resolution(("10.0.0.2", port))  # a new connection each time, maybe the same peer
        scope = {"type": "http", "client": connection.client, "extensions": {"realip.connection": connection},
                 "headers": [(b"x-forwarded-for", value)]}  # fmt: skip
        for _ in range(2):  # and its keep-alive requests
            asyncio.run(asgi(scope, None, None))  # type: ignore[arg-type]
            assert published[-1].client == (value.decode(), 0)
            assert published[-1].peer == ("10.0.0.2", port) and published[-1].hops == ("10.0.0.2",)


def test_the_toa_answer_cache_never_hands_a_new_socket_an_old_answer() -> None:
    """Remembered per socket object, weakly: a new socket (even with a freed one's id) is asked anew."""

    class Resolver_:
        asks_toa = True

        def __init__(self) -> None:
            self.asked: list[object] = []

        def resolve(self, sock: object, peer: object) -> Resolution:
            self.asked.append(sock)
            return make_resolution(("2001:db8::5", 1), peer, Source.TOA)  # type: ignore[arg-type]

    class Sock:
        pass

    resolver = Resolver_()
    decider = Resolver(_settings())
    lookup = ConnectionLookup(resolver, decider)  # type: ignore[arg-type]
    facts = decider.peer_facts(("100.125.0.1", 5), ask=True)
    sock, other = Sock(), Sock()
    assert lookup.ask({"gunicorn.socket": sock}, facts).resolution.source == Source.TOA
    assert lookup.ask({"gunicorn.socket": sock}, facts).resolution.source == Source.TOA
    assert resolver.asked == [sock]  # once per connection
    resolver.asked.clear()
    del sock  # the connection is closed: its socket goes
    lookup.ask({"gunicorn.socket": other}, facts)
    assert resolver.asked == [other]
    assert len(decider.memory.sockets) == 1  # the closed connection's entry went with its socket


def test_every_cache_stays_bounded_and_long_texts_are_not_kept() -> None:
    """A hostile client varying its port, its address and its headers: nothing grows past the limit."""
    options = {"environ": {}, "trusted_proxies": "10.0.0.0/8"}
    asgi = RealIPMiddleware(None, **options)
    wsgi = RealIPWSGIMiddleware(None, **options)
    long = "x" * 2000
    for i in range(CACHE_SIZE + 500):
        client = f"198.18.{i >> 8 & 255}.{i & 255}"
        for value in (f"{client}, 10.0.0.1", f"{long}{i}, {client}", f"<junk {i}>"):
            _asgi_once(asgi, ("10.0.0.2", 1024 + i), [("x-forwarded-for", value)])
            _wsgi_once(wsgi, "10.0.0.2", str(1024 + i), {"x-forwarded-for": value})
        _asgi_once(asgi, (f"::ffff:{client}", 2000 + i), [])
    for middleware in (asgi, wsgi):
        for name, table in middleware.memory.stats().items():
            assert table["entries"] <= CACHE_SIZE, name
            assert table["longest_key"] <= CACHED_VALUE_LENGTH, name
    for facts in list(asgi.memory.peers.values()) + list(wsgi.memory.peers.values()):
        memo = facts.last
        assert memo is None or len(memo[0] or "") <= CACHED_VALUE_LENGTH


def test_unhashable_and_missing_peers_still_work() -> None:
    asgi = RealIPMiddleware(None, environ={})
    for _ in range(2):
        assert _asgi_once(asgi, ["::ffff:10.0.0.1", 5], [])["client"] == ("10.0.0.1", 5)
        assert _asgi_once(asgi, None, [])["extensions"]["realip"].client is None
    wsgi = RealIPWSGIMiddleware(None, environ={})
    environ = {"REMOTE_ADDR": "::ffff:10.0.0.1"}  # uWSGI: no REMOTE_PORT
    wsgi.app = lambda environ, start_response: [b""]
    wsgi(environ, None)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.0.0.1", "0")
