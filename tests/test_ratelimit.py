"""realip.ratelimit: one key per client network, from what realip decided.

In-process: the keys themselves (grouping, prefixes, mapped and NAT64
addresses, what is not an address, the cache's bound), and every kind of
request the key takes. Behind a real nginx: slowapi (uvicorn), Flask-Limiter
(gunicorn gthread) and django-ratelimit (gunicorn), each served from its
docs snippet (``docs/snippets/ratelimit_slowapi.py``, ``ratelimit_flask.py``,
``ratelimit_django.py``), rate limit real IPv6 clients: two addresses of one /64 share a
bucket, another /64 does not, whatever the clients forge.

The IPv6 clients are real source addresses: the test adds ``fd15:15:0:1::a``,
``fd15:15:0:1::b`` and ``fd15:15:0:2::a`` to ``lo`` (``ip -6 addr add``, as
root) and removes them afterwards; the clients connect from them to nginx on
``::1``, which appends what it saw to ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import realip.ratelimit
from realip import ConfigError, Resolution
from realip.core import CACHE_SIZE
from realip.ratelimit import UNKNOWN, client_ip, ip_key, key

from .support.clients import client
from .support.programs import IN_CI, require_program
from .support.proxies import nginx
from .support.servers import ROOT, gunicorn_argv, serve, uvicorn_argv

SNIPPETS = ROOT / "docs" / "snippets"

# ------------------------------------------------------------------------------ the keys


@pytest.mark.parametrize(
    ("ip", "options", "expected"),
    [
        ("2001:db8:1:2:a:b:c:d", {}, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", {}, "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:0:0:0:1", {}, "2001:db8:1:2::/64"),  # any spelling: one key
        ("2001:db8:1:2:a:b:c:d", {"ipv6_prefix": 128}, "2001:db8:1:2:a:b:c:d/128"),
        ("2001:db8:1:2:a:b:c:d", {"ipv6_prefix": 56}, "2001:db8:1::/56"),
        ("2001:db8:1:2:a:b:c:d", {"ipv6_prefix": 0}, "::/0"),
        ("203.0.113.5", {}, "203.0.113.5/32"),
        ("203.0.113.5", {"ipv4_prefix": 24}, "203.0.113.0/24"),
        ("::ffff:203.0.113.5", {}, "203.0.113.5/32"),  # a dual-stack listener's spelling
        ("64:ff9b::203.0.113.5", {}, "203.0.113.5/32"),  # NAT64 well-known prefix: one IPv4 client
        ("64:ff9b::203.0.113.5", {"ipv4_prefix": 24}, "203.0.113.0/24"),
        ("64:ff9b:1::203.0.113.5", {}, "64:ff9b:1::/64"),  # a local-use prefix: an IPv6 network
        ("fe80::1%eth0", {}, "fe80::/64"),  # zone id dropped
        ("::1", {}, "::/64"),
        ("not an address", {}, UNKNOWN),
        ("", {}, UNKNOWN),
        ("203.0.113.5:80", {}, UNKNOWN),
    ],
)
def test_ip_key(ip: str, options: dict[str, int], expected: str) -> None:
    assert ip_key(ip, **options) == expected


def test_two_addresses_of_one_64_share_a_key_and_two_64s_do_not() -> None:
    assert ip_key("2001:db8:1:2::a") == ip_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert ip_key("2001:db8:1:2::a") != ip_key("2001:db8:1:3::a")
    assert ip_key("203.0.113.5") != ip_key("203.0.113.6")


@pytest.mark.parametrize(
    "options",
    [{"ipv6_prefix": 129}, {"ipv6_prefix": -1}, {"ipv4_prefix": 33}, {"ipv6_prefix": True}, {"ipv4_prefix": "24"}],
)
def test_a_prefix_out_of_range_is_a_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        ip_key("203.0.113.5", **options)
    assert next(iter(options)) in str(raised.value)


def test_the_cache_stays_bounded() -> None:
    ip_key("2001:db8::1", ipv6_prefix=48, ipv4_prefix=20)
    cache = realip.ratelimit._caches[(48, 20)]
    for n in range(CACHE_SIZE + 50):
        assert ip_key(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", ipv6_prefix=48, ipv4_prefix=20).endswith("/20")
    assert 0 < len(cache) <= CACHE_SIZE


# ------------------------------------------------------------------------------ every kind of request

DECIDED = Resolution(client=("2001:db8:1:2::7", 0), peer=("::ffff:10.0.0.1", 5555), source="x-forwarded-for")


def test_asgi_scope_and_wsgi_environ_take_what_realip_decided() -> None:
    scope = {"type": "http", "client": ("2001:db8:1:2::7", 0), "extensions": {"realip": DECIDED}}
    environ = {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "2001:db8:1:2::7", "realip": DECIDED}
    assert key(scope) == key(environ) == "2001:db8:1:2::/64"


def test_starlette_request_and_the_slowapi_key() -> None:
    from starlette.requests import Request

    scope = {"type": "http", "client": ("2001:db8:1:2::7", 0), "extensions": {"realip": DECIDED}, "headers": []}
    request = Request(scope)
    assert realip.ratelimit.slowapi_key(request) == "2001:db8:1:2::/64"
    assert realip.ratelimit.slowapi_key(request, ipv6_prefix=128) == "2001:db8:1:2::7/128"


def test_flask_request_and_the_flask_limiter_key() -> None:
    from flask import Flask, request

    app = Flask(__name__)
    with app.test_request_context("/", environ_base={"REMOTE_ADDR": "2001:db8:1:2::7", "realip": DECIDED}):
        assert key(request) == "2001:db8:1:2::/64"
        assert realip.ratelimit.flask_limiter_key() == "2001:db8:1:2::/64"


DJANGO_REQUESTS = """
import django
from django.conf import settings
settings.configure()
django.setup()
from django.test import RequestFactory
from realip import Resolution
from realip.ratelimit import django_key, key
decided = Resolution(client=("2001:db8:1:2::7", 0), peer=("::ffff:10.0.0.1", 5555), source="x-forwarded-for")
request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1")
request.realip = decided  # what realip's Django middleware sets
print(django_key("group", request), django_key(None, request, ipv6_prefix=128))
request = RequestFactory().get("/", REMOTE_ADDR="::ffff:203.0.113.5")  # no realip: the peer
print(key(request))
"""


def test_django_request_and_the_django_ratelimit_key() -> None:
    import sys

    done = subprocess.run([sys.executable, "-c", DJANGO_REQUESTS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2001:db8:1:2::/64", "2001:db8:1:2::7/128", "203.0.113.5/32"]


def test_without_realip_the_key_is_the_normalised_socket_peer_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    realip.ratelimit._once._done.clear()
    with caplog.at_level(logging.WARNING, logger="realip"):
        assert key({"type": "http", "client": ("::ffff:203.0.113.5", 4711)}) == "203.0.113.5/32"
        assert key({"REQUEST_METHOD": "GET", "REMOTE_ADDR": "2001:db8:1:2::7"}) == "2001:db8:1:2::/64"
    assert len(caplog.records) == 1  # said once
    assert "did not see" in caplog.messages[0]


def test_no_address_is_one_shared_key() -> None:
    unix = Resolution(client=None, peer=None, source="unix")
    assert key({"type": "http", "client": None, "extensions": {"realip": unix}}) == UNKNOWN
    assert key({"REQUEST_METHOD": "GET", "REMOTE_ADDR": "", "realip": unix}) == UNKNOWN
    assert client_ip({"type": "http", "client": None, "extensions": {}}) is None


def test_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a request"):
        key(object())
    with pytest.raises(TypeError, match="not a request"):
        key({"something": "else"})


# ------------------------------------------------------------------------------ in process, the real libraries


def test_slowapi_snippet_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snippet's app with slowapi's real Request objects, from a trusted proxy at 10.0.0.1."""
    import importlib.util

    monkeypatch.setenv("REALIP_TRUSTED_PROXIES", "10.0.0.1")
    spec = importlib.util.spec_from_file_location("ratelimit_slowapi_in_process", SNIPPETS / "ratelimit_slowapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    async def get(forwarded_for: str) -> int:
        transport = httpx.ASGITransport(app=module.app, client=("10.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as c:
            return (await c.get("/", headers={"X-Forwarded-For": forwarded_for})).status_code

    async def script() -> list[int]:
        return [await get(ip) for ip in ("2001:db8:1:2::a", "2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:3::a")]

    assert asyncio.run(script()) == [200, 200, 429, 200]


# ------------------------------------------------------------------------------ behind a real nginx

PROXY = "127.0.0.10"
SAME_A, SAME_B, OTHER = "fd15:15:0:1::a", "fd15:15:0:1::b", "fd15:15:0:2::a"
FORGED = {"X-Forwarded-For": "6.6.6.6, fd15:15:0:3::1"}  # the leftmost entries are the client's own words


@pytest.fixture(scope="module")
def ipv6_clients() -> Iterator[None]:
    """Three IPv6 source addresses on ``lo``: two in one /64, one in another."""
    ip = require_program("ip")
    if os.geteuid() != 0:
        message = "adding IPv6 addresses to lo needs root"
        if IN_CI:
            pytest.fail(message + "; CI runs as root")
        pytest.skip(message)
    try:
        for address in (SAME_A, SAME_B, OTHER):
            done = subprocess.run(
                [ip, "-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if done.returncode != 0 and "exists" not in done.stderr:  # left by an interrupted run: fine
                pytest.fail(f"ip -6 addr add {address}: {done.stderr.strip()}")
        yield
    finally:
        for address in (SAME_A, SAME_B, OTHER):
            subprocess.run([ip, "-6", "addr", "del", f"{address}/128", "dev", "lo"], capture_output=True, timeout=30)


def get(port: int, source: str, path: str = "/") -> httpx.Response:
    host = "[::1]" if ":" in source else "127.0.0.1"
    with client(source) as c:
        return c.get(f"http://{host}:{port}{path}", headers=FORGED)


@contextlib.contextmanager
def behind_nginx(name: str, argv: list[str], tmp_path: Path, **env: str) -> Iterator[int]:
    environment = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SNIPPETS)]),
        "REALIP_TRUSTED_PROXIES": PROXY,
        "REALIP_TOA": "off",
        **env,
    }
    with (
        serve(name, argv, tmp_path, env=environment, cwd=SNIPPETS, ready_path="/ready") as server,
        nginx(tmp_path, "nginx-realip.conf", UPSTREAM=server.port, BIND=PROXY) as port,
    ):
        yield port


def statuses(port: int, sources: list[str], path: str = "/") -> list[int]:
    return [get(port, source, path).status_code for source in sources]


@pytest.mark.usefixtures("ipv6_clients")
def test_slowapi_behind_nginx(tmp_path: Path) -> None:
    argv = uvicorn_argv("ratelimit_slowapi:app")
    with behind_nginx("uvicorn-slowapi", argv, tmp_path) as port:
        first = get(port, SAME_A)
        assert first.status_code == 200, first.text
        assert first.json() == {"client": SAME_A, "key": "fd15:15:0:1::/64"}
        assert statuses(port, [SAME_A, SAME_B, OTHER, OTHER]) == [200, 429, 200, 200]
        assert statuses(port, ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.2"]) == [200, 200, 200, 429]
        # slowapi's own key, per address: the second address of the /64 gets a bucket of its own
        assert statuses(port, [SAME_A, SAME_A, SAME_B, SAME_A], "/per-address") == [200, 200, 200, 429]


@pytest.mark.usefixtures("ipv6_clients")
def test_flask_limiter_behind_nginx(tmp_path: Path) -> None:
    argv = gunicorn_argv("ratelimit_flask:app", worker="gthread")
    with behind_nginx("gunicorn-flask-limiter", argv, tmp_path) as port:
        first = get(port, SAME_A)
        assert first.status_code == 200, first.text
        assert first.json() == {"client": SAME_A, "key": "fd15:15:0:1::/64"}
        assert statuses(port, [SAME_A, SAME_B, OTHER, OTHER]) == [200, 429, 200, 200]
        assert statuses(port, ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.2"]) == [200, 200, 200, 429]
        # /per-56: fd15:15:0:1::/64 and fd15:15:0:2::/64 are one /56
        assert statuses(port, [SAME_A, OTHER, SAME_B], "/per-56") == [200, 200, 429]


@pytest.mark.usefixtures("ipv6_clients")
def test_django_ratelimit_behind_nginx(tmp_path: Path) -> None:
    argv = gunicorn_argv("ratelimit_django:application", worker="sync")
    with behind_nginx("gunicorn-django-ratelimit", argv, tmp_path, DJANGO_SETTINGS_MODULE="ratelimit_django") as port:
        first = get(port, SAME_A)
        assert first.status_code == 200, first.text
        assert first.json() == {"client": SAME_A, "key": "fd15:15:0:1::/64"}
        assert statuses(port, [SAME_A, SAME_B, OTHER, OTHER]) == [200, 429, 200, 200]
        assert statuses(port, ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.2"]) == [200, 200, 200, 429]
