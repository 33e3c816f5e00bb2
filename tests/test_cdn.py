"""CDN strategies (``strategy="cloudflare"``, ``"cloudfront"``, ``"fastly"``): the CDN's
own client header, believed only when the CDN handed the request over.

In-process, every rule with exact inputs (the CDNs' real shipped ranges). Then
real servers (uvicorn, gunicorn) behind a real nginx that plays the CDN's last
hop (``tests/proxies/nginx-cdn-edge.conf``, connecting from ``127.0.0.20``),
directly and with an nginx of "your own" behind it (``nginx-realip.conf`` from
``127.0.0.10``), with clients on ``127.0.0.2`` and ``::1`` that forge the CDN's
header and ``X-Forwarded-For``: through the CDN, through your nginx past the
CDN, and straight to the application.

``127.0.0.20`` stands in for the CDN's published ranges through a test-only
range file in ``REALIP_RANGES_DIR``, in the format ``realip ranges update``
writes (:func:`realip.ranges.lists.render_file`), dated now so that it wins
over the shipped copy. realip refuses loopback space in any provider list (no
CDN connects from there): the servers here lift that one check in their own
process (:func:`allow_loopback_stand_in`), and a test below shows the file is
refused without it.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realip import ConfigError, RealIPMiddleware, RealIPWSGIMiddleware, ranges
from realip.address import TrustedNetworks
from realip.config import Settings
from realip.core import Resolver
from realip.doctor import collect
from realip.doctor.ranges import range_findings, range_names
from realip.ranges import lists
from realip.result import Source, make_resolution
from realip.strategies import CDN_CLIENT_HEADERS, CDNHeader, strategy_from_name
from realip.toa import TOAAnswer, TOAStatus

from .support.clients import client, local_port, target_for
from .support.proxies import nginx
from .support.servers import Server, gunicorn_argv, serve, uvicorn_argv

CDNS = tuple(CDN_CLIENT_HEADERS)
PROXY = "127.0.0.10"  # your own nginx behind the CDN
EDGE = "127.0.0.20"  # the CDN's last hop (the test-only range file)
OWN = TrustedNetworks.parse("10.0.0.1", option="trusted_proxies")
FORGED = "6.6.6.6"


def member(cdn: str) -> str:
    """An address in the CDN's shipped ranges."""
    return str(ranges.networks(cdn)[0].network_address + 1)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("REALIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # no cache copy but the test's own
    ranges.clear_cache()
    yield
    ranges.clear_cache()


# ------------------------------------------------------------------------------ the rule, in decide()


@pytest.mark.parametrize("cdn", CDNS)
def test_the_cdn_connecting_directly_names_the_client_in_its_header(cdn: str) -> None:
    strategy = CDNHeader(cdn)
    value = "203.0.113.7:4711" if cdn == "cloudfront" else "203.0.113.7"
    decision = strategy.decide(f"{FORGED}, 203.0.113.7", OWN, value, member(cdn))
    assert (str(decision.ip), decision.hops, decision.error) == ("203.0.113.7", (), None)
    assert decision.header == CDN_CLIENT_HEADERS[cdn]
    assert decision.port == (4711 if cdn == "cloudfront" else None)


@pytest.mark.parametrize("cdn", CDNS)
def test_behind_your_proxy_the_header_counts_only_when_the_proxy_got_the_request_from_the_cdn(cdn: str) -> None:
    strategy = CDNHeader(cdn)
    edge = member(cdn)
    value = "203.0.113.7:4711" if cdn == "cloudfront" else "203.0.113.7"
    # CDN -> your proxy (10.0.0.1, the peer) -> app: the entry your proxy appended is the CDN's
    decision = strategy.decide(f"{FORGED}, 203.0.113.7, {edge}", OWN, value, "10.0.0.1")
    assert (str(decision.ip), [str(h) for h in decision.hops], decision.header) == (
        "203.0.113.7", [edge], CDN_CLIENT_HEADERS[cdn],
    )  # fmt: skip
    # two of your proxies: walked past both
    decision = strategy.decide(f"203.0.113.7, {edge}, 10.0.0.1", OWN, value, "10.0.0.1")
    assert (str(decision.ip), [str(h) for h in decision.hops]) == ("203.0.113.7", [edge, "10.0.0.1"])
    # a client reaching your proxy directly: its own address decides, whatever it wrote
    for forged_xff in ("", f"{edge}", f"{FORGED}, {edge}"):
        xff = f"{forged_xff}, 198.51.100.9" if forged_xff else "198.51.100.9"
        decision = strategy.decide(xff, OWN, value, "10.0.0.1")
        assert (str(decision.ip), decision.hops, decision.header, decision.error) == ("198.51.100.9", (), None, None)


@pytest.mark.parametrize("cdn", CDNS)
def test_without_its_header_the_cdn_is_walked_past_in_x_forwarded_for(cdn: str) -> None:
    strategy = CDNHeader(cdn)
    edge = member(cdn)
    decision = strategy.decide(f"{FORGED}, 203.0.113.7", OWN, "", edge)  # the CDN connects directly
    assert (str(decision.ip), decision.hops, decision.header) == ("203.0.113.7", (), None)
    decision = strategy.decide(f"{FORGED}, 203.0.113.7, {edge}", OWN, " ", "10.0.0.1")  # behind your proxy
    assert (str(decision.ip), [str(h) for h in decision.hops]) == ("203.0.113.7", [edge])
    shielded = f"203.0.113.7, {edge}"  # a second CDN node in between (Fastly shielding)
    assert str(strategy.decide(shielded, OWN, "", edge).ip) == "203.0.113.7"
    assert strategy.decide("", OWN, "", edge).error == "missing header"


@pytest.mark.parametrize("cdn", CDNS)
def test_a_cdn_header_that_is_not_one_address_is_not_believed(cdn: str) -> None:
    strategy = CDNHeader(cdn)
    edge = member(cdn)
    name = CDN_CLIENT_HEADERS[cdn]
    for bad in ("203.0.113.7, 6.6.6.6", "<script>", "unknown", "203.0.113.7:99999"):
        direct = strategy.decide("203.0.113.7", OWN, bad, edge)
        assert direct.ip is None and direct.error is not None and direct.error.startswith(f"{name}: "), bad
        behind = strategy.decide(f"203.0.113.7, {edge}", OWN, bad, "10.0.0.1")
        assert str(behind.ip) == edge and behind.header is None  # the CDN hop: the last trusted one
        assert behind.error is not None and behind.error.startswith(f"{name}: ")
    garbage = strategy.decide(f"{edge}, <junk>", OWN, "203.0.113.7", "10.0.0.1")
    assert garbage.ip is None and garbage.error is not None and garbage.error.startswith("x-forwarded-for: ")


def test_cloudfront_viewer_address_is_address_and_port() -> None:
    strategy = CDNHeader("cloudfront")
    edge = member("cloudfront")
    cases = {
        "203.0.113.7:46532": ("203.0.113.7", 46532),
        "2001:db8::7:443": ("2001:db8::7", 443),  # IPv6 without brackets: the last group is the port
        "[2001:db8::7]:443": ("2001:db8::7", 443),
    }
    for value, (ip, port) in cases.items():
        decision = strategy.decide("", OWN, value, edge)
        assert (str(decision.ip), decision.port) == (ip, port), value
    for bad in ("203.0.113.7", "2001:db8::7", "203.0.113.7:", "203.0.113.7:+80", "203.0.113.7:80:80"):
        assert strategy.decide("", OWN, bad, edge).ip is None, bad


def test_a_peer_without_an_address_is_one_of_your_proxies() -> None:
    strategy = CDNHeader("cloudflare")
    edge = member("cloudflare")
    decision = strategy.decide(f"203.0.113.7, {edge}", OWN, "198.51.100.1", None)
    assert str(decision.ip) == "198.51.100.1"
    assert str(strategy.decide("203.0.113.7", OWN, "198.51.100.1", None).ip) == "203.0.113.7"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=40), st.sampled_from([None, "10.0.0.1", "173.245.48.1"]))
def test_decide_never_raises_and_answers_an_address_or_none(value: str, client_value: str, peer: Any) -> None:
    for cdn in CDNS:
        decision = CDNHeader(cdn).decide(value, OWN, client_value, peer)
        assert decision.ip is None or isinstance(decision.ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
        assert decision.error is None or not re.fullmatch(r"\S+: internal error: \w+", decision.error)


# ------------------------------------------------------------------------------ configuration


def test_names_build_the_cdn_strategies_and_give_them_back() -> None:
    for cdn in CDNS:
        strategy = strategy_from_name(f"  {cdn.upper()} ")
        assert strategy == CDNHeader(cdn)
        assert str(strategy) == cdn and strategy_from_name(str(strategy)) == strategy
        assert strategy.header == "x-forwarded-for"
        assert strategy.client_header == CDN_CLIENT_HEADERS[cdn]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        CDNHeader("akamai")  # no published range list ships for it
    with pytest.raises(ConfigError) as info:
        strategy_from_name("akamai", option="REALIP_STRATEGY")
    assert "cloudflare" in str(info.value)


def test_the_cdn_ranges_are_trusted_by_the_strategy_itself() -> None:
    own = Settings.build(environ={}, strategy="cloudflare", trusted_proxies="10.0.0.1")
    assert own.trusted_proxies.contains_text("10.0.0.1") and own.trusted_proxies.contains_text(member("cloudflare"))
    alone = Settings.build(environ={"REALIP_STRATEGY": "cloudfront"})
    assert alone.trusted_proxies.networks == tuple(ranges.networks("cloudfront"))
    assert not alone.trusted_proxies.contains_text("10.0.0.1")


def test_a_peer_the_toa_module_rewrote_is_never_trusted_even_in_the_cdn_ranges() -> None:
    resolver = Resolver(Settings.build(environ={}, strategy="cloudflare"))
    edge = member("cloudflare")
    seen = resolver.facts_for(make_resolution((edge, 1), (edge, 1), Source.PEER))
    assert seen.read
    rewritten = make_resolution((edge, 1), (edge, 1), Source.TOA, toa=TOAAnswer(TOAStatus.NONE, errno=errno.EFAULT))
    assert rewritten.rewritten_by_kernel
    facts = resolver.facts_for(rewritten)
    assert not facts.read and facts.strip


# ------------------------------------------------------------------------------ the middlewares, in-process


def run_asgi(options: dict, peer: tuple[str, int], headers: list[tuple[str, str]], app: Any = None) -> dict:
    seen: list[dict] = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope)

    scope = {"type": "http", "scheme": "http", "client": peer, "server": ("10.9.9.9", 80), "path": "/",
             "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers]}  # fmt: skip
    middleware = app or RealIPMiddleware(None, environ={}, **options)
    middleware.app = inner
    asyncio.run(middleware(scope, None, None))
    return seen[0]


def run_wsgi(options: dict, peer: tuple[str, int], headers: dict[str, str], app: Any = None) -> dict:
    seen: list[dict] = []
    environ = {"REMOTE_ADDR": peer[0], "REMOTE_PORT": str(peer[1]), "wsgi.url_scheme": "http", "HTTP_HOST": "h",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}  # fmt: skip
    middleware = app or RealIPWSGIMiddleware(None, environ={}, **options)
    middleware.app = lambda environ, start_response: seen.append(environ) or [b""]
    middleware(environ, lambda *a: None)
    return seen[0]


def forwarding(scope_or_environ: dict) -> dict[str, str]:
    if "headers" in scope_or_environ:
        return {k.decode(): v.decode("latin-1") for k, v in scope_or_environ["headers"]}
    return {k[5:].lower().replace("_", "-"): v for k, v in scope_or_environ.items() if k.startswith("HTTP_")}


@pytest.mark.parametrize("cdn", CDNS)
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_the_middlewares_apply_the_rule_and_keep_the_cdn_header_only_when_believed(cdn: str, kind: str) -> None:
    name = CDN_CLIENT_HEADERS[cdn]
    value = "203.0.113.7:4711" if cdn == "cloudfront" else "203.0.113.7"
    options = {"strategy": cdn, "trusted_proxies": "10.0.0.1"}
    edge = member(cdn)

    def run(peer: str, headers: dict[str, str]) -> tuple[Any, dict[str, str]]:
        if kind == "asgi":
            seen = run_asgi(options, (peer, 1), list(headers.items()))
            return seen["extensions"]["realip"], forwarding(seen)
        seen = run_wsgi(options, (peer, 1), headers)
        return seen["realip"], forwarding(seen)

    realip, headers = run(edge, {"x-forwarded-for": "203.0.113.7", name: value})  # the CDN itself
    assert (realip.ip, realip.source, realip.hops, headers[name]) == ("203.0.113.7", name, (edge,), value)
    realip, headers = run("10.0.0.1", {"x-forwarded-for": f"203.0.113.7, {edge}", name: value})  # CDN -> proxy
    assert (realip.ip, realip.source, realip.hops) == ("203.0.113.7", name, (edge, "10.0.0.1"))
    realip, headers = run("10.0.0.1", {"x-forwarded-for": f"{edge}, 198.51.100.9", name: value})  # past the CDN
    assert (realip.ip, realip.source, realip.hops) == ("198.51.100.9", "x-forwarded-for", ("10.0.0.1",))
    assert name not in headers  # not believed: removed
    realip, headers = run("198.51.100.9", {"x-forwarded-for": FORGED, name: value})  # straight to the app
    assert (realip.ip, realip.source) == ("198.51.100.9", "peer")
    assert name not in headers and "x-forwarded-for" not in headers


def test_the_cdn_header_is_stripped_from_untrusted_peers_in_every_spelling() -> None:
    for cdn, name in CDN_CLIENT_HEADERS.items():
        spellings = [(name, FORGED), (name.replace("-", "_"), FORGED), ("accept", "*/*")]
        scope = run_asgi({"strategy": cdn}, ("198.51.100.9", 1), spellings)
        assert scope["headers"] == [(b"accept", b"*/*")]
        environ = run_wsgi({"strategy": cdn}, ("198.51.100.9", 1), {name: FORGED})
        assert "HTTP_" + name.upper().replace("-", "_") not in environ


def test_raw_headers_are_kept_when_asked() -> None:
    options = {"strategy": "cloudflare", "trusted_proxies": "10.0.0.1", "strip_untrusted_headers": False}
    headers = {"x-forwarded-for": "198.51.100.9", "cf-connecting-ip": FORGED}
    scope = run_asgi(options, ("10.0.0.1", 1), list(headers.items()))
    assert scope["client"][0] == "198.51.100.9" and forwarding(scope)["cf-connecting-ip"] == FORGED
    environ = run_wsgi(options, ("10.0.0.1", 1), headers)
    assert environ["REMOTE_ADDR"] == "198.51.100.9" and environ["HTTP_CF_CONNECTING_IP"] == FORGED


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_keep_alive_connection_gets_the_answers_a_fresh_middleware_gives(kind: str) -> None:
    """The same peer, the same X-Forwarded-For, the CDN header changing: never a remembered answer."""
    edge = member("cloudflare")
    options = {"strategy": "cloudflare", "trusted_proxies": "10.0.0.1", "environ": {}}
    reused = RealIPMiddleware(None, **options) if kind == "asgi" else RealIPWSGIMiddleware(None, **options)
    run = run_asgi if kind == "asgi" else run_wsgi
    values = ["203.0.113.7", "198.51.100.1", "", "203.0.113.7", "junk", "198.51.100.1"]
    for peer in (edge, "10.0.0.1"):
        for value in values:
            headers = {"x-forwarded-for": f"203.0.113.99, {edge}", "cf-connecting-ip": value}
            items: Any = list(headers.items()) if kind == "asgi" else headers
            fresh_app = RealIPMiddleware(None, **options) if kind == "asgi" else RealIPWSGIMiddleware(None, **options)
            fresh = run({}, (peer, 4000), items, app=fresh_app)
            again = run({}, (peer, 4000), items, app=reused)
            key = "extensions" if kind == "asgi" else "realip"
            assert again[key] == fresh[key] and forwarding(again) == forwarding(fresh), (peer, value)


# ------------------------------------------------------------------------------ the test-only range file


def allow_loopback_stand_in() -> None:
    """Test only: let a provider list hold ``127.0.0.20``, the CDN's stand-in on loopback.

    realip refuses loopback space in every provider list (a CDN never connects from
    it); the servers below lift that one check, in their own process only.
    """
    loopback = ipaddress.ip_network("127.0.0.0/8")
    lists.FORBIDDEN = tuple((network, why) for network, why in lists.FORBIDDEN if network != loopback)  # type: ignore[misc]


def write_stand_in(directory: Path, cdn: str, fetched: datetime | None = None) -> Path:
    """``<cdn>.txt`` holding ``127.0.0.20/32``, as ``realip ranges update`` writes a list."""
    directory.mkdir(parents=True, exist_ok=True)
    when = fetched or datetime.now(timezone.utc)
    text = lists.render_file(
        cdn, [ipaddress.ip_network(f"{EDGE}/32")], ["https://cdn.test/ranges"], when, ["test-only stand-in"]
    )
    path = directory / f"{cdn}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_stand_in_is_refused_without_the_test_hook(tmp_path: Path) -> None:
    write_stand_in(tmp_path, "cloudflare")
    loaded = ranges.load("cloudflare", directory=tmp_path)
    assert loaded.origin == "shipped" and "127.0.0.0/8" in " ".join(loaded.notes)
    assert not TrustedNetworks(loaded.networks).contains_text(EDGE)


def test_the_newer_copy_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lists, "FORBIDDEN", tuple(f for f in lists.FORBIDDEN if not f[0].is_loopback))
    write_stand_in(tmp_path / "new", "cloudflare")
    monkeypatch.setenv("REALIP_RANGES_DIR", str(tmp_path / "new"))
    strategy = CDNHeader("cloudflare")
    assert strategy.ranges.networks == (ipaddress.ip_network(f"{EDGE}/32"),)
    shipped = ranges.load("cloudflare", directory=tmp_path / "none").fetched
    assert shipped is not None
    write_stand_in(tmp_path / "old", "cloudflare", fetched=shipped - timedelta(days=1))
    older = ranges.load("cloudflare", directory=tmp_path / "old")
    assert older.origin == "shipped" and "older than the shipped copy" in " ".join(older.notes)


def test_doctor_reports_the_age_of_every_range_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lists, "FORBIDDEN", tuple(f for f in lists.FORBIDDEN if not f[0].is_loopback))
    write_stand_in(tmp_path, "cloudflare")
    env = {"REALIP_STRATEGY": "cloudflare", "REALIP_TRUSTED_PROXIES": "fastly, 10.0.0.1,private,nope",
           "REALIP_RANGES_DIR": str(tmp_path)}  # fmt: skip
    assert range_names(env) == ["fastly", "private", "cloudflare"]
    found = {f.data["range"]: f for f in range_findings(env)}
    assert all(f.check == "environment" for f in found.values())
    assert found["cloudflare"].status == "ok" and found["cloudflare"].data["origin"] == "cache"
    assert found["private"].status == "ok"
    assert found["fastly"].status == "warn" and "realip ranges update fastly" in found["fastly"].advice
    later = range_findings(env, now=datetime.now(timezone.utc) + timedelta(days=31))
    assert {f.data["range"]: f.status for f in later}["cloudflare"] == "warn"
    assert range_findings({"REALIP_TRUSTED_PROXIES": "10.0.0.1"}) == []
    # and `realip doctor` runs it
    report = collect(probes=False, environ=env)
    assert any(f.summary.startswith("named range cloudflare:") for f in report.findings)


# ------------------------------------------------------------------------------ behind a real nginx playing the CDN


def asgi_factory() -> RealIPMiddleware:
    """The app uvicorn runs (``--factory``): configured from ``REALIP_*``, after the test hook."""
    allow_loopback_stand_in()
    return RealIPMiddleware(_asgi_echo)


def wsgi_factory() -> RealIPWSGIMiddleware:
    """The app gunicorn runs (``tests.test_cdn:wsgi_factory()``)."""
    allow_loopback_stand_in()
    return RealIPWSGIMiddleware(_wsgi_echo)


def _describe(realip: Any, client: Any, headers: dict[str, str]) -> bytes:
    body = {"client": list(client) if client else None, "source": realip.source, "hops": list(realip.hops),
            "error": realip.error, "headers": headers}  # fmt: skip
    return json.dumps(body).encode()


async def _asgi_echo(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    body = _describe(scope["extensions"]["realip"], scope["client"], headers)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _wsgi_echo(environ: dict, start_response: Any) -> list[bytes]:
    headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    client_address = (environ["REMOTE_ADDR"], int(environ.get("REMOTE_PORT") or 0))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [_describe(environ["realip"], client_address, headers)]


SERVERS = {
    "uvicorn": uvicorn_argv("tests.test_cdn:asgi_factory", extra=["--factory"]),
    "gunicorn": gunicorn_argv("tests.test_cdn:wsgi_factory()", worker="gthread"),
}
#: What the CDN's last hop writes into its header (nginx variables).
HEADER_VALUES = {"cloudflare": "$remote_addr", "cloudfront": "$remote_addr:$remote_port", "fastly": "$remote_addr"}


@pytest.fixture(scope="module", params=[(s, c) for s in SERVERS for c in CDNS], ids=lambda p: "-".join(p))
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server, cdn = request.param
    tmp = tmp_path_factory.mktemp(f"{server}-{cdn}")
    write_stand_in(tmp / "ranges", cdn)
    env = {"REALIP_STRATEGY": cdn, "REALIP_TRUSTED_PROXIES": PROXY, "REALIP_RANGES_DIR": str(tmp / "ranges")}
    with serve(server, SERVERS[server], tmp, env=env) as running:
        running.extra.update(cdn=cdn, tmp=tmp, header=CDN_CLIENT_HEADERS[cdn])
        yield running


def edge_values(app: Server, upstream: int) -> dict[str, object]:
    """The placeholders of nginx-cdn-edge.conf: the CDN's header and what it writes there."""
    cdn = str(app.extra["cdn"])
    return {
        "UPSTREAM": upstream,
        "BIND": EDGE,
        "CLIENT_HEADER": app.extra["header"],
        "CLIENT_VALUE": HEADER_VALUES[cdn],
    }


@pytest.fixture(scope="module")
def edge(app: Server) -> Iterator[int]:
    """The CDN in front of the application."""
    with nginx(app.extra["tmp"], "nginx-cdn-edge.conf", **edge_values(app, app.port)) as port:  # type: ignore[arg-type]
        yield port


@pytest.fixture(scope="module")
def own_proxy(app: Server) -> Iterator[int]:
    """Your nginx in front of the application."""
    with nginx(app.extra["tmp"], "nginx-realip.conf", UPSTREAM=app.port, BIND=PROXY) as port:  # type: ignore[arg-type]
        yield port


@pytest.fixture(scope="module")
def edge_then_own_proxy(app: Server, own_proxy: int) -> Iterator[int]:
    """The CDN in front of your nginx."""
    with nginx(app.extra["tmp"], "nginx-cdn-edge.conf", **edge_values(app, own_proxy)) as port:  # type: ignore[arg-type]
        yield port


def get(port: int, source: str, headers: dict[str, str], path: str = "/") -> tuple[dict[str, Any], int]:
    host = target_for(source)
    netloc = f"[{host}]" if ":" in host else host
    with client(source) as c, c.stream("GET", f"http://{netloc}:{port}{path}", headers=headers) as response:
        own_port = local_port(response)
        response.read()
    assert response.status_code == 200, response.text
    return response.json(), own_port


def forgeries(app: Server) -> list[dict[str, str]]:
    name = str(app.extra["header"])
    forged = f"{FORGED}:1" if app.extra["cdn"] == "cloudfront" else FORGED
    return [
        {name: forged},
        {name: forged, "X-Forwarded-For": FORGED},
        {name: forged, "X-Forwarded-For": f"{FORGED}, {EDGE}"},  # claims to have come through the CDN
        {"X-Forwarded-For": f"{EDGE}, {PROXY}"},
    ]


SOURCES = ["127.0.0.2", "::1"]


@pytest.mark.parametrize("source", SOURCES)
def test_a_client_behind_the_cdn_is_seen_whatever_it_forges(app: Server, edge: int, source: str) -> None:
    name = app.extra["header"]
    for forged in [{}, *forgeries(app)]:
        body, port = get(edge, source, forged)
        assert body["client"][0] == source, forged
        assert (body["source"], body["hops"], body["error"]) == (name, [EDGE], None), forged
        if app.extra["cdn"] == "cloudfront":  # CloudFront-Viewer-Address carries the client's port
            assert body["client"][1] == port
            assert body["headers"][name] == f"{source}:{port}"
        else:
            assert body["headers"][name] == source


@pytest.mark.parametrize("source", SOURCES)
def test_a_client_behind_the_cdn_and_your_nginx_is_seen(app: Server, edge_then_own_proxy: int, source: str) -> None:
    for forged in [{}, *forgeries(app)]:
        body, _ = get(edge_then_own_proxy, source, forged)
        assert body["client"][0] == source, forged
        assert (body["source"], body["hops"], body["error"]) == (app.extra["header"], [EDGE, PROXY], None)


@pytest.mark.parametrize("source", SOURCES)
def test_without_the_cdn_header_x_forwarded_for_decides(
    app: Server, edge: int, edge_then_own_proxy: int, source: str
) -> None:
    name = app.extra["header"]
    for port, hops in ((edge, [EDGE]), (edge_then_own_proxy, [EDGE, PROXY])):
        body, _ = get(port, source, {"X-Forwarded-For": FORGED}, path="/bare/")
        assert (body["client"][0], body["source"], body["hops"]) == (source, "x-forwarded-for", hops)
        assert name not in body["headers"]


@pytest.mark.parametrize("source", SOURCES)
def test_a_client_bypassing_the_cdn_through_your_nginx_cannot_choose(app: Server, own_proxy: int, source: str) -> None:
    name = app.extra["header"]
    for forged in forgeries(app):
        body, _ = get(own_proxy, source, forged)
        assert (body["client"][0], body["source"], body["hops"]) == (source, "x-forwarded-for", [PROXY]), forged
        assert name not in body["headers"], forged  # not believed, and removed


@pytest.mark.parametrize("source", SOURCES)
def test_a_client_reaching_the_app_directly_cannot_choose(app: Server, source: str) -> None:
    name = app.extra["header"]
    for forged in forgeries(app):
        body, _ = get(app.port, source, forged)
        assert body["client"][0] == source and body["source"] in ("peer", "mapped"), forged
        assert name not in body["headers"] and "x-forwarded-for" not in body["headers"]
