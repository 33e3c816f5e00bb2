"""The tricky inputs (docs/comparison.md) through realip, uvicorn's ProxyHeadersMiddleware and Werkzeug's ProxyFix.

Each trap is one request as a proxy at ``10.0.0.1`` (the address users trust,
``10.0.0.0/8``) would pass it on, fed in-process to:

* realip, ``RealIPMiddleware`` (ASGI) and ``RealIPWSGIMiddleware`` (WSGI), with
  ``trusted_proxies=["10.0.0.0/8"]`` (the ``Forwarded`` rows with
  ``strategy="forwarded"``): both must give the same answer;
* uvicorn's ``ProxyHeadersMiddleware`` as installed, with
  ``trusted_hosts="10.0.0.0/8"`` (what a user would write) and with ``"*"``
  (the widely recommended ``--forwarded-allow-ips='*'``);
* Werkzeug's ``ProxyFix`` as installed, ``x_for=1`` (one proxy).

The results become ``docs/_generated/tricky-inputs.md``, which the docs
include. The test fails when the committed file is not what it generates (a
new uvicorn or Werkzeug, a change in realip): refresh it with
``REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_comparison.py`` and
review the difference.

Below the table: the same traps on real servers where a server, not a
middleware, decides (uvicorn's own ``--proxy-headers``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import realip
from realip import RealIPMiddleware, RealIPWSGIMiddleware

from .support.clients import client
from .support.servers import ROOT, Server, serve, tool

GENERATED = ROOT / "docs" / "_generated" / "tricky-inputs.md"
REGENERATE = os.environ.get("REALIP_REGENERATE", "").lower() in ("1", "true", "yes")

PROXY = "10.0.0.1"
TRUSTED = "10.0.0.0/8"
PEER_PORT = 5555


@dataclass(frozen=True)
class Trap:
    title: str
    headers: list[tuple[str, str]]
    client: str | None
    """The right answer; ``None`` when nothing in the request names the client
    (garbage from a trusted proxy): then the proxy itself is the safe answer."""
    peer: str = PROXY
    forged: frozenset[str] = field(default_factory=frozenset)
    """Addresses the client wrote and no proxy vouched for."""

    @property
    def strategy(self) -> str:
        return "forwarded" if any(name.lower() == "forwarded" for name, _ in self.headers) else "x-forwarded-for"


def xff(*values: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", value) for value in values]


FORGED = frozenset({"6.6.6.6"})
TRAPS = [
    Trap("one proxy, one client", xff("203.0.113.7"), "203.0.113.7"),
    Trap("leftmost entry forged by the client", xff("6.6.6.6, 203.0.113.7"), "203.0.113.7", forged=FORGED),
    Trap(
        "two proxies (10.0.0.2 appended the client, 10.0.0.1 appended 10.0.0.2)",
        xff("6.6.6.6, 203.0.113.7, 10.0.0.2"),
        "203.0.113.7",
        forged=FORGED,
    ),
    Trap("the header twice (the client's, the proxy's)", xff("6.6.6.6", "203.0.113.7"), "203.0.113.7", forged=FORGED),
    Trap("entry with a port", xff("203.0.113.7:4711"), "203.0.113.7"),
    Trap("entry with a bad port", xff("203.0.113.7:http"), None),
    Trap("bracketed IPv6 with a port", xff("[2001:db8::7]:4711"), "2001:db8::7"),
    Trap("bare IPv6", xff("2001:db8::7"), "2001:db8::7"),
    Trap("IPv6 in capitals", xff("2001:DB8::7"), "2001:db8::7"),
    Trap("IPv4-mapped IPv6 in the header", xff("::ffff:203.0.113.7"), "203.0.113.7"),
    Trap("IPv4 with leading zeros (octal?)", xff("203.000.113.007"), None),
    Trap(
        "proxy seen as ::ffff:10.0.0.1 (dual-stack socket)", xff("203.0.113.7"), "203.0.113.7", peer=f"::ffff:{PROXY}"
    ),
    Trap("garbage", xff("<script>alert(1)</script>"), None),
    Trap("empty entries left of the client", xff(", , 203.0.113.7"), "203.0.113.7"),
    Trap("empty header", xff(""), None),
    Trap("unknown (squid's forwarded_for off)", xff("unknown"), None),
    Trap("untrusted peer sending X-Forwarded-For", xff("6.6.6.6"), "198.51.100.9", peer="198.51.100.9", forged=FORGED),
    Trap(
        "untrusted peer on a dual-stack socket",
        xff("6.6.6.6"),
        "198.51.100.9",
        peer="::ffff:198.51.100.9",
        forged=FORGED,
    ),
    Trap("Forwarded, quoted IPv6 with a port", [("Forwarded", 'for="[2001:db8::7]:4711"')], "2001:db8::7"),
    Trap(
        "Forwarded, leftmost element forged",
        [("Forwarded", "for=6.6.6.6, for=203.0.113.7;proto=https")],
        "203.0.113.7",
        forged=FORGED,
    ),
    Trap("Forwarded, obfuscated identifier", [("Forwarded", "for=_hidden")], None),
    Trap("Forwarded, unknown", [("Forwarded", "for=unknown")], None),
    Trap(
        "Forwarded, unbalanced quote planted on the left",
        [("Forwarded", 'for="6.6.6.6, for=203.0.113.7')],
        "203.0.113.7",
        forged=FORGED,
    ),
]


# ------------------------------------------------------------------------------ the middlewares, in-process


def _scope(trap: Trap) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in trap.headers],
        "client": (trap.peer, PEER_PORT),
        "server": ("10.0.0.100", 8000),
    }


def _environ(trap: Trap) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "10.0.0.100",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": trap.peer,
        "REMOTE_PORT": str(PEER_PORT),
        "wsgi.url_scheme": "http",
    }
    for name, value in trap.headers:  # repeated headers are joined, as WSGI servers do
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def run_asgi(middleware: Any, trap: Trap) -> tuple[str, int]:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["client"] = scope["client"]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(f"unexpected response: {message}")

    asyncio.run(middleware(app)(_scope(trap), receive, send))
    host, port = seen["client"]
    return str(host), int(port)


def run_wsgi(middleware: Any, trap: Trap) -> tuple[str, int]:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["client"] = (environ["REMOTE_ADDR"], int(environ.get("REMOTE_PORT") or 0))
        return []

    middleware(app)(_environ(trap), lambda *a: None)
    return seen["client"]  # type: ignore[no-any-return]


def _without_realip_variables() -> Any:
    return mock.patch.dict(os.environ, {k: v for k, v in os.environ.items() if not k.startswith("REALIP_")}, clear=True)


def realip_asgi(trap: Trap) -> tuple[tuple[str, int], str | None]:
    seen: dict[str, Any] = {}

    def factory(app: Any) -> Any:
        async def capture(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen["error"] = scope["extensions"]["realip"].error
            await app(scope, receive, send)

        return RealIPMiddleware(capture, trusted_proxies=[TRUSTED], strategy=trap.strategy)

    with _without_realip_variables():
        return run_asgi(factory, trap), seen["error"]


def realip_wsgi(trap: Trap) -> tuple[tuple[str, int], str | None]:
    seen: dict[str, Any] = {}

    def factory(app: Any) -> Any:
        def capture(environ: dict[str, Any], start_response: Any) -> Any:
            seen["error"] = environ["realip"].error
            return app(environ, start_response)

        return RealIPWSGIMiddleware(capture, trusted_proxies=[TRUSTED], strategy=trap.strategy)

    with _without_realip_variables():
        return run_wsgi(factory, trap), seen["error"]


def uvicorn_proxy_headers(trap: Trap, trusted_hosts: str) -> tuple[str, int]:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    return run_asgi(lambda app: ProxyHeadersMiddleware(app, trusted_hosts=trusted_hosts), trap)


def werkzeug_proxy_fix(trap: Trap) -> tuple[str, int]:
    from werkzeug.middleware.proxy_fix import ProxyFix

    return run_wsgi(lambda app: ProxyFix(app, x_for=1), trap)


# ------------------------------------------------------------------------------ judging and the table


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def verdict(trap: Trap, host: str) -> str:
    """How a result reads: the client, the proxy (safe), or a failure, and which."""
    ip = _address(host)
    if ip is None:
        return "❌ **not an address**"
    if host in trap.forged or str(_unmapped(ip)) in trap.forged:
        return "❌ **forged**"
    proxy = _unmapped(ipaddress.ip_address(trap.peer))
    if trap.client is not None and _unmapped(ip) == ipaddress.ip_address(trap.client):
        return "✅ client" if host == trap.client else "⚠️ client, another spelling"
    if _unmapped(ip) == proxy:
        if trap.client is None:
            return "✅ the proxy" if host == str(proxy) else "⚠️ the proxy, another spelling"
        return "➖ the proxy"
    if ip in ipaddress.ip_network(TRUSTED):
        return "❌ **a proxy**"
    return "❌ **wrong**"


def cell(trap: Trap, result: tuple[str, int], error: str | None = None, *, reads_forwarded: bool = False) -> str:
    host, port = result
    shown = f"`{host}`" + (f" port {port}" if port not in (0, PEER_PORT) else "")
    note = " (`error` set)" if error else ""
    unread = " (reads no `Forwarded`)" if trap.strategy == "forwarded" and not reads_forwarded else ""
    return f"{shown}{note}<br>{verdict(trap, host)}{unread}"


def request_text(trap: Trap) -> str:
    lines = [f"from `{trap.peer}`"] + [f"`{name}: {value}`" for name, value in trap.headers]
    return "<br>".join(lines)


COLUMNS = [
    "trap",
    "request",
    "realip",
    f'uvicorn, `trusted_hosts="{TRUSTED}"`',
    'uvicorn, `trusted_hosts="*"`',
    "Werkzeug `ProxyFix(x_for=1)`",
]


def generate() -> str:
    rows = []
    for number, trap in enumerate(TRAPS, 1):
        (asgi, error), (wsgi, wsgi_error) = realip_asgi(trap), realip_wsgi(trap)
        assert asgi == wsgi and error == wsgi_error, (trap, asgi, wsgi, error, wsgi_error)
        rows.append(
            [
                f"{number}. {trap.title}",
                request_text(trap),
                cell(trap, asgi, error, reads_forwarded=True),
                cell(trap, uvicorn_proxy_headers(trap, TRUSTED)),
                cell(trap, uvicorn_proxy_headers(trap, "*")),
                cell(trap, werkzeug_proxy_fix(trap)),
            ]
        )
    caption = (
        f"Tricky inputs, as realip {realip.__version__}, uvicorn {version('uvicorn')} and "
        f"Werkzeug {version('werkzeug')} see them"
    )
    lines = [
        "<!-- Generated by tests/test_comparison.py; do not edit. Refresh with:",
        "     REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_comparison.py -->",
        "",
        f":::{{table}} {caption}",
        ":name: tricky-inputs-table",
        ":widths: auto",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in rows),
        ":::",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("trap", TRAPS, ids=[t.title for t in TRAPS])
def test_realip_gives_the_client_or_the_proxy_never_a_forged_value(trap: Trap) -> None:
    (asgi, error), (wsgi, _) = realip_asgi(trap), realip_wsgi(trap)
    assert asgi == wsgi
    expected = trap.client if trap.client is not None else str(_unmapped(ipaddress.ip_address(trap.peer)))
    assert asgi[0] == expected
    assert verdict(trap, asgi[0]).startswith("✅")
    if trap.client is None and trap.headers[0][1]:
        assert error is not None  # garbage from a trusted proxy is reported, not silently used


def test_others_fail_where_client_ip_md_says_they_do() -> None:
    """What docs/comparison.md says of each, against the installed versions."""
    leftmost = TRAPS[1]
    assert uvicorn_proxy_headers(leftmost, "*")[0] == "6.6.6.6"  # "*" takes the client-forged leftmost entry
    mapped_peer = next(t for t in TRAPS if t.peer == f"::ffff:{PROXY}")
    assert uvicorn_proxy_headers(mapped_peer, TRUSTED)[0] == f"::ffff:{PROXY}"  # 10.0.0.0/8 misses ::ffff:10.0.0.1
    with_port = TRAPS[4]
    assert werkzeug_proxy_fix(with_port)[0] == "203.0.113.7:4711"  # a port in REMOTE_ADDR
    untrusted = next(t for t in TRAPS if t.peer == "198.51.100.9")
    assert werkzeug_proxy_fix(untrusted)[0] == "6.6.6.6"  # no peer check at all


def test_generated_table_is_up_to_date() -> None:
    text = generate()
    if REGENERATE:
        GENERATED.parent.mkdir(parents=True, exist_ok=True)
        GENERATED.write_text(text, encoding="utf-8")
        return
    committed = GENERATED.read_text(encoding="utf-8") if GENERATED.exists() else ""
    assert committed == text, (
        f"{GENERATED.relative_to(ROOT)} is not what the installed realip, uvicorn and Werkzeug do now. "
        "Regenerate it and review the difference:\n"
        "    REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_comparison.py"
    )


# ------------------------------------------------------------------------------ real servers

ECHO = "tests.apps.echo:asgi_app"


def uvicorn_argv_default_proxy_headers(*extra: str) -> list[str]:
    """uvicorn with its own ``--proxy-headers`` as they are by default: on, trusting
    ``127.0.0.1,::1`` (``--forwarded-allow-ips``)."""
    return [tool("uvicorn"), ECHO, "--fd", "{fd}", "--log-level", "info", *extra]


def get(server: Server, source: str, headers: dict[str, str]) -> dict[str, Any]:
    host = "[::1]" if ":" in source else "127.0.0.1"
    with client(source) as c:
        response = c.get(f"http://{host}:{server.port}/", headers=headers)
    assert response.status_code == 200
    return response.json()


FORGED_HEADERS = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize("family", ["v4", "dual"])
def test_uvicorn_default_proxy_headers_believe_any_local_client(tmp_path: Path, family: str) -> None:
    """uvicorn rewrites the client (and scheme) from X-Forwarded-For (-Proto) before
    realip's middleware sees the request, for any peer in ``--forwarded-allow-ips``
    (``127.0.0.1,::1`` by default): on the host of its proxy, every local process and
    user chooses its address. On a dual-stack socket IPv4 peers are
    ``::ffff:127.0.0.1``, which that list misses; ``::1`` still matches."""
    with serve("uvicorn", uvicorn_argv_default_proxy_headers(), tmp_path, family=family) as server:
        if family == "v4":
            body = get(server, "127.0.0.1", FORGED_HEADERS)
            assert body["client"][0] == "6.6.6.6"
            assert body["peer"][0] == "6.6.6.6"  # realip was handed the forged value as the "socket peer"
        else:
            assert get(server, "127.0.0.1", FORGED_HEADERS)["client"][0] == "127.0.0.1"
            body = get(server, "::1", FORGED_HEADERS)
            assert body["client"][0] == "6.6.6.6"
        assert body["scheme"] == "https"


def test_with_realip_protocols_neither_the_client_nor_the_scheme_is_forged(tmp_path: Path) -> None:
    """realip's protocol classes take uvicorn's proxy headers out of their connections, so
    neither the client nor the scheme comes from a local client's headers (until realip 0.1
    the forged scheme stayed). realip says so once; docs/security.md says --no-proxy-headers."""
    argv = uvicorn_argv_default_proxy_headers("--http", "realip.uvicorn:H11Protocol")
    with serve("uvicorn", argv, tmp_path, family="v4") as server:
        body = get(server, "127.0.0.1", FORGED_HEADERS)
        assert body["client"][0] == "127.0.0.1"
        assert body["scheme"] == "http"
        assert "uvicorn's proxy headers are off" in server.wait_for_log("uvicorn's proxy headers are off")


@pytest.mark.parametrize("source", ["127.0.0.1", "::1"])
def test_no_proxy_headers_leaves_the_decision_to_realip(tmp_path: Path, source: str) -> None:
    argv = uvicorn_argv_default_proxy_headers("--no-proxy-headers")
    with serve("uvicorn", argv, tmp_path, family="dual") as server:
        body = get(server, source, FORGED_HEADERS)
    assert body["client"][0] == source
    assert body["scheme"] == "http"
