"""Named ranges (``realip.ranges``): the shipped lists, the cache, ``realip ranges update`` and ``show``.

The update tests fetch from a real HTTP server on 127.0.0.1 (``http.server`` in
a thread, stopped at the end) that serves each provider's own format, and every
way an answer can be wrong: malformed, empty, huge, slow, a whole address
family, private space, HTTP 500. After each failure the last good copy must be
intact and no temporary file left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from realip import ranges
from realip.__main__ import main
from realip.address import TrustedNetworks, parse_ip
from realip.ranges import fetch, lists

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = ROOT / "docs" / "snippets" / "behind_cdn.py"
PROVIDER_NAMES = ("cloudflare", "cloudfront", "fastly", "google-cloud-lb", "huawei-elb")
NOW = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No cache directory but the test's own, no URL overrides, nothing remembered between tests."""
    for name in [n for n in os.environ if n.startswith("REALIP_") or n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)  # and no HTTP proxy between the tests and their loopback server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    ranges.clear_cache()
    yield
    ranges.clear_cache()


# ------------------------------------------------------------------------------ the lists themselves

MEMBERS = {
    "cloudflare": (["173.245.48.1", "104.16.0.1", "2606:4700::1", "2a06:98c0::1"], ["8.8.8.8", "2001:4860::8888"]),
    "cloudfront": (["130.176.0.1", "15.158.1.1", "64.252.64.1"], ["8.8.8.8", "13.32.0.1", "127.0.0.1"]),
    "fastly": (["151.101.1.1", "199.232.0.1", "2a04:4e42::1"], ["8.8.8.8", "173.245.48.1"]),
    "google-cloud-lb": (["35.191.1.1", "130.211.0.1", "2600:2d00:1:1::5", "2600:2d00:1:b029::1"], ["8.8.8.8"]),
    "huawei-elb": (["100.125.3.4", "100.126.0.1"], ["100.64.0.1", "10.0.0.1", "8.8.8.8"]),
    "loopback": (["127.0.0.1", "127.255.0.9", "::1"], ["10.1.2.3", "::2", "8.8.8.8"]),
    "private": (["10.1.2.3", "172.16.0.1", "172.31.255.1", "192.168.1.1", "fd00::1"], ["100.125.3.4", "127.0.0.1"]),
}


def test_known_names() -> None:
    assert ranges.known_names() == (*PROVIDER_NAMES, "loopback", "private")
    assert set(MEMBERS) == set(ranges.known_names())


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_each_list_matches_its_known_members_and_non_members(name: str) -> None:
    trusted = TrustedNetworks(ranges.networks(name))
    inside, outside = MEMBERS[name]
    assert [a for a in inside if parse_ip(a) not in trusted] == []
    assert [a for a in outside if parse_ip(a) in trusted] == []
    # the mapped spelling of a member matches too, as realip unmaps peers
    v4 = next(a for a in inside if ":" not in a)
    assert parse_ip(f"::ffff:{v4}") in trusted


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_no_list_holds_a_whole_address_family(name: str) -> None:
    nets = ranges.networks(name)
    assert nets and all(n.prefixlen > 0 for n in nets)
    mapped = ip_network("::ffff:0:0/96")
    assert not any(n.version == 6 and n.overlaps(mapped) for n in nets)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", PROVIDER_NAMES)
def test_shipped_files_parse_pass_the_checks_and_say_where_they_come_from(name: str) -> None:
    path = ranges.shipped_path(name)
    text = path.read_text(encoding="utf-8")
    parsed = lists.parse_file(text, name=name)
    assert parsed.networks == lists.check_networks(parsed.networks)
    assert all(url.startswith("https://") for url in parsed.sources)
    assert "NOT downloaded" in text or "no machine-readable list" in text  # and says so
    loaded = ranges.load(name)
    assert (loaded.origin, loaded.path, loaded.networks) == ("shipped", path, parsed.networks)
    assert loaded.refreshable == (name in fetch.refreshable_names())
    assert loaded.age_days is not None and loaded.age_days >= 0


def test_provider_lists_hold_no_local_sets() -> None:
    """``loopback`` and ``private`` are never implied by a provider name."""
    local = [*ranges.networks("loopback"), *ranges.networks("private")]
    for name in PROVIDER_NAMES:
        for network in ranges.networks(name):
            assert not any(network.version == n.version and network.overlaps(n) for n in local), (name, network)  # type: ignore[arg-type]


def test_names_are_case_and_space_insensitive() -> None:
    assert ranges.networks(" Cloudflare ") == ranges.networks("cloudflare")
    assert ranges.load("LOOPBACK").origin == "built-in"


@pytest.mark.parametrize("bad", ["cloudflar", "", "aws", "cloudflare,fastly", 7, None])
def test_unknown_name_raises_a_key_error_listing_the_known_names(bad: Any) -> None:
    with pytest.raises(KeyError) as raised:
        ranges.networks(bad)
    assert isinstance(raised.value, ranges.UnknownRangeError)
    message = str(raised.value)
    assert message.startswith("no named range ")
    assert all(name in message for name in ranges.known_names())


def test_the_checks_refuse_what_no_provider_list_may_hold() -> None:
    for text, why in [
        ("0.0.0.0/0", "whole IPv4"),
        ("::/0", "whole IPv6"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("64:ff9b::/96", "NAT64"),
        ("2002:100::/24", "6to4"),
        ("2001:0:abcd::/48", "Teredo"),
        ("2.0.0.0/7", "wider than /8"),
        ("2400::/12", "wider than /24"),
        ("10.0.0.0/8", "RFC 1918"),
        ("192.168.1.0/24", "RFC 1918"),
        ("127.0.0.0/8", "loopback"),
        ("fd00::/48", "RFC 4193"),
        ("fe80::/64", "link-local"),
        ("239.1.0.0/16", "multicast"),
        ("ff02::/16", "wider than /24"),
        ("ff0e::/32", "multicast"),
    ]:
        with pytest.raises(ranges.RangesError, match=why):
            lists.check_networks([ip_network(text)])
    with pytest.raises(ranges.RangesError, match="no networks"):
        lists.check_networks([])
    many = [ip_network(f"20.{i // 256}.{i % 256}.0/24") for i in range(lists.MAX_ENTRIES + 1)]
    with pytest.raises(ranges.RangesError, match="more than 10000"):
        lists.check_networks(many)
    assert lists.check_networks([ip_network("1.0.0.0/8"), ip_network("1.0.0.0/8")]) == (ip_network("1.0.0.0/8"),)
    for text in ["173.245.48.1/20", "1.2.3.4/33", "2606:4700::/32%eth0", "example.com", " 1.2.3.0/24 x"]:
        with pytest.raises(ranges.RangesError, match="not a network"):
            lists.parse_network(text)


# ------------------------------------------------------------------------------ the cache directory


def test_cache_dir_order(tmp_path: Path) -> None:
    home = Path.home()
    assert ranges.cache_dir({"REALIP_RANGES_DIR": "/srv/r", "XDG_CACHE_HOME": "/x"}) == Path("/srv/r")
    assert ranges.cache_dir({"REALIP_RANGES_DIR": " ", "XDG_CACHE_HOME": "/x"}) == Path("/x/realip/ranges")
    assert ranges.cache_dir({"XDG_CACHE_HOME": "relative"}) == home / ".cache" / "realip" / "ranges"
    assert ranges.cache_dir({}) == home / ".cache" / "realip" / "ranges"


def _write(directory: Path, name: str, networks: list[str], fetched: datetime = NOW) -> Path:
    nets = [ip_network(n) for n in networks]
    return fetch.write_list(directory, name, nets, [f"http://mirror.test/{name}"], fetched.replace(microsecond=0))


def test_cache_copy_is_preferred_over_the_shipped_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("REALIP_RANGES_DIR", str(cache))
    path = _write(cache, "cloudflare", ["173.245.48.0/20", "203.0.113.0/24"])
    loaded = ranges.load("cloudflare")
    assert (loaded.origin, loaded.path, loaded.sources) == ("cache", path, ("http://mirror.test/cloudflare",))
    assert loaded.networks == (ip_network("173.245.48.0/20"), ip_network("203.0.113.0/24"))
    assert loaded.age_days is not None and loaded.age_days < 1 and not loaded.stale
    assert ranges.load("fastly").origin == "shipped"  # no cache copy of that one


def test_lists_are_read_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("REALIP_RANGES_DIR", str(cache))
    first = ranges.load("fastly")
    assert first.origin == "shipped"
    _write(cache, "fastly", ["151.101.0.0/16"])
    assert ranges.load("fastly") is first  # not read again per call
    ranges.clear_cache()
    assert ranges.load("fastly").networks == (ip_network("151.101.0.0/16"),)


def test_older_broken_or_unreadable_cache_copies_fall_back_to_the_shipped_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    _write(cache, "cloudflare", ["173.245.48.0/20"], fetched=datetime(2020, 1, 1, tzinfo=timezone.utc))
    (cache / "fastly.txt").write_text("# realip named range: fastly\n# source: x\n# fetched: 2099-01-01\n0.0.0.0/0\n")
    (cache / "cloudfront.txt").mkdir()  # reading it fails with an OSError
    (cache / "google-cloud-lb.txt").write_text("# realip named range: fastly\n# source: x\n# fetched: 2099-01-01\n")
    with caplog.at_level(logging.WARNING, logger="realip"):
        loaded = {name: ranges.load(name, directory=cache) for name in PROVIDER_NAMES}
    assert {name: r.origin for name, r in loaded.items()} == dict.fromkeys(PROVIDER_NAMES, "shipped")
    assert "older than the shipped copy" in loaded["cloudflare"].notes[0]
    assert "covers the whole IPv4 address space" in loaded["fastly"].notes[0]
    assert "not readable" in loaded["cloudfront"].notes[0]
    assert "the file is for 'fastly'" in loaded["google-cloud-lb"].notes[0]
    assert loaded["huawei-elb"].notes == ()
    assert len(caplog.records) == 4
    statuses = {line.name: line for line in ranges.report(directory=cache)}
    assert statuses["fastly"].status == "warn" and "covers the whole" in statuses["fastly"].advice


def test_a_broken_shipped_copy_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "fastly.txt"
    bad.write_text("# source: x\n# fetched: 2025-01-01\n10.0.0.0/8\n")
    monkeypatch.setattr(ranges, "shipped_path", lambda name: bad)
    with pytest.raises(ranges.RangesError, match=r"shipped list 'fastly'.*RFC 1918"):
        ranges.load("fastly")
    [line] = ranges.report(["fastly"])
    assert line.status == "problem"


# ------------------------------------------------------------------------------ report (realip doctor)


def test_report_ages_and_warnings(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _write(cache, "cloudflare", ["173.245.48.0/20"])
    shipped_fastly = ranges.load("fastly", directory=cache).fetched
    assert shipped_fastly is not None
    fresh = shipped_fastly + timedelta(days=10)
    lines = {line.name: line for line in ranges.report(directory=cache, now=fresh)}
    assert list(lines) == list(ranges.known_names())
    assert lines["cloudflare"].status == "ok" and "from the cache" in lines["cloudflare"].summary
    assert lines["fastly"].status == "ok" and "10 days old" in lines["fastly"].summary
    assert lines["loopback"].status == "ok" and lines["loopback"].data["origin"] == "built-in"
    json.dumps([line.data for line in lines.values()])  # JSON-serialisable, for doctor --json

    late = shipped_fastly + timedelta(days=40)
    lines = {line.name: line for line in ranges.report(["fastly", "huawei-elb", "nope"], directory=cache, now=late)}
    assert lines["fastly"].status == "warn" and "(over 30)" in lines["fastly"].summary
    assert "realip ranges update fastly" in lines["fastly"].advice
    assert lines["huawei-elb"].status == "ok"  # 40 days: the hand-kept lists warn past 365
    assert lines["nope"].status == "problem" and "known names" in lines["nope"].summary
    later = shipped_fastly + timedelta(days=400)
    [huawei] = ranges.report(["huawei-elb"], now=later)
    assert huawei.status == "warn" and "no machine-readable list" in huawei.advice


# ------------------------------------------------------------------------------ a local HTTP server

CLOUDFLARE_V4 = "173.245.48.0/20\n103.21.244.0/22\n198.51.100.0/24\n"  # the last one: to tell the copies apart
CLOUDFLARE_V6 = "2400:cb00::/32\n2606:4700::/32\n"
AWS = {
    "syncToken": "1",
    "createDate": "2025-01-01-00-00-00",
    "prefixes": [
        {"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"},
        {"ip_prefix": "15.158.0.0/16", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING"},
        {"ip_prefix": "130.176.0.0/18", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING"},
        {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "EC2"},
        {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON"},
    ],
    "ipv6_prefixes": [
        {"ipv6_prefix": "2600:9000::/28", "region": "GLOBAL", "service": "CLOUDFRONT"},
        {"ipv6_prefix": "2600:9000:1000::/36", "region": "GLOBAL", "service": "CLOUDFRONT_ORIGIN_FACING"},
    ],
}
FASTLY = {"addresses": ["151.101.0.0/16", "199.232.0.0/16"], "ipv6_addresses": ["2a04:4e42::/32"]}
HUGE = 5 * 1024 * 1024 + 1024

#: path -> (status, body) or a callable writing the whole answer itself.
Route = tuple[int, bytes] | Callable[[BaseHTTPRequestHandler], None]


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.release = threading.Event()  # wakes slow handlers at the end
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path, (404, b"not here\n"))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if callable(route):
                        route(self)
                        return
                    status, body = route
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    running.thread.start()
    try:
        yield running
    finally:
        running.stop()


def _slow_headers(server: Server) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        server.release.wait(3)  # longer than the 1 s timeout; woken at the end
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(CLOUDFLARE_V4.encode())

    return answer


def _trickle(server: Server) -> Callable[[BaseHTTPRequestHandler], None]:
    """A byte every 0.2 s: each read is quick, the whole answer is not."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        for _ in range(25):
            handler.wfile.write(b"#")
            handler.wfile.flush()
            if server.release.wait(0.2):
                return

    return answer


def _huge_without_length(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.end_headers()  # HTTP/1.0, no Content-Length: the body ends when the connection does
    line = b"173.245.48.0/20\n" * 4096
    for _ in range(HUGE // len(line) + 1):
        handler.wfile.write(line)


def _redirect(to: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


@pytest.fixture()
def provider_urls(server: Server) -> dict[str, str]:
    """Each provider's real format, served fresh for each test."""
    server.routes.clear()
    server.routes.update(
        {
            "/ips-v4": (200, CLOUDFLARE_V4.encode()),
            "/ips-v6": (200, CLOUDFLARE_V6.encode()),
            "/ip-ranges.json": (200, json.dumps(AWS).encode()),
            "/public-ip-list": (200, json.dumps(FASTLY).encode()),
        }
    )
    return {
        "cloudflare-v4": server.url("/ips-v4"),
        "cloudflare-v6": server.url("/ips-v6"),
        "cloudfront": server.url("/ip-ranges.json"),
        "fastly": server.url("/public-ip-list"),
    }


def _update(directory: Path, urls: dict[str, str], *names: str, timeout: float = 1.0) -> list[fetch.UpdateResult]:
    return fetch.update(names or None, directory=directory, urls=urls, timeout=timeout)


def _listing(directory: Path) -> dict[str, bytes]:
    """Every file in the directory (temporary ones included) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_update_fetches_each_provider_in_its_own_format(tmp_path: Path, provider_urls: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    results = _update(cache, provider_urls)
    assert [(r.name, r.ok) for r in results] == [("cloudflare", True), ("cloudfront", True), ("fastly", True)]
    assert set(_listing(cache)) == {"cloudflare.txt", "cloudfront.txt", "fastly.txt"}
    cloudflare = ranges.load("cloudflare", directory=cache)
    assert cloudflare.origin == "cache"
    assert [str(n) for n in cloudflare.networks] == [*CLOUDFLARE_V4.split(), *CLOUDFLARE_V6.split()]
    assert cloudflare.sources == (provider_urls["cloudflare-v4"], provider_urls["cloudflare-v6"])
    assert cloudflare.age_days is not None and cloudflare.age_days < 0.01
    # CloudFront: origin-facing only, both families; not the viewer-facing CLOUDFRONT, not EC2
    cloudfront = ranges.load("cloudfront", directory=cache)
    assert [str(n) for n in cloudfront.networks] == ["15.158.0.0/16", "130.176.0.0/18", "2600:9000:1000::/36"]
    fastly = ranges.load("fastly", directory=cache)
    assert [str(n) for n in fastly.networks] == [*FASTLY["addresses"], *FASTLY["ipv6_addresses"]]
    text = (cache / "cloudfront.txt").read_text()
    assert text.startswith("# realip named range: cloudfront\n# source: http://127.0.0.1:")
    assert "# fetched: " in text and "# service: CLOUDFRONT_ORIGIN_FACING" in text
    assert stat.S_IMODE((cache / "fastly.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755
    assert "written to" in results[0].message and results[0].networks == 5


def test_update_one_name_and_the_environment_mirror(
    tmp_path: Path, provider_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("REALIP_RANGES_DIR", str(cache))
    monkeypatch.setenv("REALIP_RANGES_URL_FASTLY", provider_urls["fastly"])
    [result] = fetch.update(["Fastly"], timeout=1.0)
    assert result.ok and result.path == cache / "fastly.txt"
    assert ranges.load("fastly").origin == "cache"  # update forgot what this process had read
    assert set(_listing(cache)) == {"fastly.txt"}


def test_a_file_written_with_a_restrictive_umask_is_still_readable_by_everyone(
    tmp_path: Path, provider_urls: dict[str, str]
) -> None:
    old = os.umask(0o077)
    try:
        [result] = _update(tmp_path / "new" / "cache", provider_urls, "fastly")
    finally:
        os.umask(old)
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644  # type: ignore[union-attr]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    [result] = _update(private, provider_urls, "fastly")
    assert result.ok and "other users cannot read it" in result.message


BAD_ANSWERS: dict[str, tuple[Route | str, str]] = {
    # name: (answer to /ips-v4, or the name of a special answer; what the failure says)
    "http-500": ((500, b"oops"), "HTTP 500"),
    "http-404": ((404, b"gone"), "HTTP 404"),
    "http-204": ((204, b""), "HTTP 204"),
    "empty": ((200, b""), "no networks"),
    "blank-lines": ((200, b"\n\n  \n"), "no networks"),
    "malformed": ((200, b"173.245.48.0/20\n<html>blocked</html>\n"), "line 2: not a network"),
    "host-bits": ((200, b"173.245.48.1/20\n"), "has host bits set"),
    "not-utf8": ((200, b"173.245.48.0/20\n\xff\xfe\n"), "not UTF-8"),
    "wrong-family": ((200, b"2606:4700::/32\n"), "IPv6 in a list of IPv4"),
    "whole-family": ((200, b"173.245.48.0/20\n0.0.0.0/0\n"), "whole IPv4 address space"),
    "too-wide": ((200, b"104.0.0.0/6\n"), "wider than /8"),
    "private": ((200, b"173.245.48.0/20\n10.0.0.0/8\n"), "RFC 1918"),
    "too-many": (
        (200, "".join(f"20.{i // 256}.{i % 256}.0/24\n" for i in range(10_001)).encode()),
        "more than 10000",
    ),
    "huge": ((200, b"#" * HUGE), "over the limit"),
    "huge-streamed": ("huge-streamed", "over the limit"),
    "slow": ("slow", "timed out after 1 s"),
    "trickle": ("trickle", "timed out after 1 s"),
    "redirect-loop": ("redirect-loop", "HTTP 302"),
    "refused": ("refused", "cannot fetch"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_a_bad_answer_keeps_the_last_good_copy(
    case: str, tmp_path: Path, server: Server, provider_urls: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    [good] = _update(cache, provider_urls, "cloudflare")
    assert good.ok
    before = _listing(cache)
    answer, why = BAD_ANSWERS[case]
    if answer == "refused":
        with contextlib.closing(socket.socket()) as unused:
            unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            urls = {**provider_urls, "cloudflare-v4": f"http://127.0.0.1:{unused.getsockname()[1]}/"}
            [result] = _update(cache, urls, "cloudflare")
    else:
        special = {
            "huge-streamed": _huge_without_length,
            "slow": _slow_headers(server),
            "trickle": _trickle(server),
            "redirect-loop": _redirect("/ips-v4"),
        }
        server.routes["/ips-v4"] = special[answer] if isinstance(answer, str) else answer
        started = time.monotonic()
        [result] = _update(cache, provider_urls, "cloudflare")
        assert time.monotonic() - started < 4
    assert not result.ok
    assert why in result.message
    assert "kept the last good copy" in result.message and str(cache / "cloudflare.txt") in result.message
    assert _listing(cache) == before  # intact, and no temporary file left behind
    loaded = ranges.load("cloudflare", directory=cache)
    assert loaded.origin == "cache" and ip_network("198.51.100.0/24") in loaded.networks


def test_a_failure_with_no_cache_copy_keeps_the_shipped_one(
    tmp_path: Path, server: Server, provider_urls: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    server.routes["/public-ip-list"] = (200, b'{"addresses": ["151.101.0.0/16"], "ipv6_addresses": "2a04:4e42::/32"}')
    [result] = _update(cache, provider_urls, "fastly")
    assert not result.ok and "no 'ipv6_addresses' list" in result.message
    assert "kept the copy shipped with realip" in result.message
    assert result.path == ranges.shipped_path("fastly")
    assert not cache.exists() or _listing(cache) == {}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "no 'prefixes' list"),
        (b'{"prefixes": [], "ipv6_prefixes": []}', "no networks"),
        (b'{"prefixes": ["15.158.0.0/16"], "ipv6_prefixes": []}', "prefixes[0]: expected an object"),
        (
            b'{"prefixes": [{"ip_prefix": 7, "service": "CLOUDFRONT_ORIGIN_FACING"}], "ipv6_prefixes": []}',
            "prefixes[0].ip_prefix: expected a network as a string",
        ),
        (
            b'{"prefixes": [], "ipv6_prefixes": [{"ipv6_prefix": "::/0", "service": "CLOUDFRONT_ORIGIN_FACING"}]}',
            "whole IPv6 address space",
        ),
        (
            b'{"prefixes": [], "ipv6_prefixes": [{"ipv6_prefix": "::ffff:0:0/96", '
            b'"service": "CLOUDFRONT_ORIGIN_FACING"}]}',
            "IPv4-mapped",
        ),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_bad_aws_documents_are_refused(
    body: bytes, why: str, tmp_path: Path, server: Server, provider_urls: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    assert _update(cache, provider_urls, "cloudfront")[0].ok
    before = _listing(cache)
    server.routes["/ip-ranges.json"] = (200, body)
    [result] = _update(cache, provider_urls, "cloudfront")
    assert not result.ok and why in result.message, result.message
    assert _listing(cache) == before


def test_cloudflare_is_written_only_when_both_lists_are_good(
    tmp_path: Path, server: Server, provider_urls: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    server.routes["/ips-v6"] = (500, b"")
    [result] = _update(cache, provider_urls, "cloudflare")
    assert not result.ok and provider_urls["cloudflare-v6"] in result.message
    assert not (cache / "cloudflare.txt").exists()


def test_the_replace_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers see the old file or the new one, never a part; a failed write leaves the old one."""
    cache = tmp_path / "cache"
    path = _write(cache, "fastly", ["151.101.0.0/16"])
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = path.read_text()
            parsed = lists.parse_file(text, name="fastly")  # raises on a partial file
            seen.append(str(parsed.networks[-1]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            _write(cache, "fastly", ["151.101.0.0/16", *(f"20.{i}.{j}.0/24" for j in range(100))])
    finally:
        stop.set()
        thread.join(5)
    assert seen and set(_listing(cache)) == {"fastly.txt"}

    before = path.read_bytes()

    def fail(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        _write(cache, "fastly", ["199.232.0.0/16"])
    assert _listing(cache) == {"fastly.txt": before}


def test_an_unwritable_directory_fails_and_keeps_the_copy_in_use(tmp_path: Path, provider_urls: dict[str, str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    [result] = _update(blocker / "cache", provider_urls, "fastly")
    assert not result.ok and "cannot write to" in result.message and "shipped" in result.message


def test_usage_errors_fetch_nothing(tmp_path: Path, server: Server, provider_urls: dict[str, str]) -> None:
    server.requests.clear()
    for names, urls, why in [
        (["nope"], None, "known names: cloudflare"),
        (["google-cloud-lb"], None, "cannot be refreshed"),
        (["huawei-elb"], None, "publishes no machine-readable list"),
        (["loopback"], None, "built in"),
        (["fastly"], ["fastly"], "expected KEY=URL"),
        (["fastly"], ["nope=http://x/"], "unknown key 'nope'"),
        (["fastly"], ["fastly=file:///etc/passwd"], "not an http:// or https:// URL"),
        (["fastly"], ["fastly=ftp://x/"], "not an http:// or https:// URL"),
    ]:
        with pytest.raises(fetch.UsageError, match=why):
            fetch.update(names, directory=tmp_path, urls=urls)
    with pytest.raises(fetch.UsageError, match="REALIP_RANGES_URL_CLOUDFLARE_V4"):
        fetch.update(["cloudflare"], directory=tmp_path, environ={"REALIP_RANGES_URL_CLOUDFLARE_V4": "gopher://x"})
    with pytest.raises(fetch.UsageError, match="timeout"):
        fetch.update(["fastly"], directory=tmp_path, timeout=0)
    assert server.requests == []


# ------------------------------------------------------------------------------ the command line


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _url_flags(urls: dict[str, str]) -> list[str]:
    return [flag for key, url in urls.items() for flag in ("--url", f"{key}={url}")]


def test_cli_update_and_show(tmp_path: Path, provider_urls: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    cache = str(tmp_path / "cache")
    code, out, err = _main(capsys, "ranges", "update", "--dir", cache, "--timeout", "1", *_url_flags(provider_urls))
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith(f"cloudflare: 5 networks from {provider_urls['cloudflare-v4']} ")
    assert len(out.splitlines()) == 3

    code, out, err = _main(capsys, "ranges", "show", "cloudflare", "--dir", cache)
    assert code == 0
    assert f"# origin: cache ({cache}/cloudflare.txt)" in out and "WARNING" not in out
    assert lists.parse_file(out, name="cloudflare").networks == ranges.load("cloudflare", directory=cache).networks

    code, out, err = _main(capsys, "ranges", "show", "--dir", cache)
    assert code == 0
    lines = [line for line in out.splitlines() if not line.startswith(" ")]
    assert [line.split()[1] for line in lines] == [f"{name}:" for name in ranges.known_names()]
    assert lines[0].startswith("ok      cloudflare: 5 networks from the cache")


def test_cli_update_failure_exits_1_and_says_why(
    tmp_path: Path, server: Server, provider_urls: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cache = str(tmp_path / "cache")
    server.routes["/public-ip-list"] = (500, b"")
    flags = ["--dir", cache, "--timeout", "1", *_url_flags(provider_urls)]
    code, out, err = _main(capsys, "ranges", "update", "fastly", "cloudfront", *flags)
    assert code == 1
    assert out.startswith("cloudfront: 3 networks from ")
    assert err == (
        f"realip ranges update: fastly: FAILED: {provider_urls['fastly']}: HTTP 500 Internal Server Error; "
        f"kept the copy shipped with realip ({ranges.shipped_path('fastly')}, fetched 2025-01-01T00:00:00Z)\n"
    )


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["ranges", "update", "google-cloud-lb"], "google-cloud-lb cannot be refreshed"),
        (["ranges", "update", "nope"], "no named range 'nope'; known names: cloudflare, cloudfront"),
        (["ranges", "update", "--url", "cloudflare=http://x/"], "unknown key 'cloudflare'"),
        (["ranges", "update", "--timeout", "0"], "expected a positive number of seconds"),
        (["ranges", "show", "nope"], "no named range 'nope'"),
        (["ranges"], "an action is required"),
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(capsys, *argv)
    assert code == 2 and why in err and out == ""


def test_cli_show_warns_about_a_stale_shipped_copy(capsys: pytest.CaptureFixture[str]) -> None:
    stale = ranges.load("fastly").stale  # the shipped copies are dated; on a later day this one is stale
    code, out, _ = _main(capsys, "ranges", "show", "fastly")
    assert code == 0 and "# origin: shipped" in out
    assert ("# WARNING: older than 30 days; run: realip ranges update fastly" in out) == stale


def test_the_installed_command_runs(tmp_path: Path, provider_urls: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALIP_")}
    env["REALIP_RANGES_DIR"] = str(tmp_path / "cache")
    env["REALIP_RANGES_URL_FASTLY"] = provider_urls["fastly"]
    argv = [sys.executable, "-m", "realip", "ranges", "update", "fastly", "--timeout", "2"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cache" / "fastly.txt").exists()


# ------------------------------------------------------------------------------ the docs snippet


async def _get(app: Any, peer: str, headers: dict[str, str]) -> Any:
    import httpx

    transport = httpx.ASGITransport(app=app, client=(peer, 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as c:
        return (await c.get("/", headers=headers)).json()


def test_behind_cdn_snippet() -> None:
    """docs/snippets/behind_cdn.py: Cloudflare, then a load balancer at 10.0.0.0/8."""
    spec = importlib.util.spec_from_file_location("docs_snippet_behind_cdn", SNIPPET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    forged = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 173.245.48.5"}
    body = asyncio.run(_get(module.app, "10.0.0.2", forged))
    assert body == {"client": "203.0.113.7", "source": "x-forwarded-for", "hops": ["173.245.48.5", "10.0.0.2"]}
    body = asyncio.run(_get(module.app, "198.51.100.9", forged))  # not Cloudflare, not the load balancer
    assert body["client"] == "198.51.100.9" and body["source"] == "peer"


def test_names_are_accepted_wherever_trusted_networks_are() -> None:
    """``trusted_proxies`` (in code and in REALIP_TRUSTED_PROXIES) takes range names next to networks."""
    import asyncio

    from realip import ConfigError, RealIPMiddleware

    seen: list[dict] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        seen.append(scope)

    for options, environ in (({"trusted_proxies": ["cloudflare", "10.0.0.0/8"]}, {}),
                             ({}, {"REALIP_TRUSTED_PROXIES": "cloudflare,10.0.0.0/8"})):  # fmt: skip
        middleware = RealIPMiddleware(app, environ=environ, **options)
        scope = {"type": "http", "client": ("173.245.48.1", 1), "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
        asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
        assert seen[-1]["client"] == ("203.0.113.9", 0)
    with pytest.raises(ConfigError, match="known names: cloudflare"):
        RealIPMiddleware(app, environ={}, trusted_proxies=["cloudflair"])
