"""No client chooses its own address: each way found to do it, tried on real servers.

Every test here is an attack that worked against an earlier realip, kept as a
regression test on the real server where it was found (docs/security.md lists
them with the rule that stops each one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from realip import ConfigError, RealIPMiddleware, RealIPWSGIMiddleware, Resolution
from realip.forwarding import FORWARDING_HEADERS
from realip.toa import TOAAnswer, TOAStatus

from . import toa_emulator
from .support.clients import websocket_whoami, whoami
from .support.servers import gunicorn_argv, serve, uvicorn_argv, werkzeug_argv

FORGED = "6.6.6.6"
ECHO_ASGI = "tests.apps.echo:asgi_app"
ECHO_WSGI = "tests.apps.echo:wsgi_app"

UVICORN_SERVERS = {
    "uvicorn-h11": uvicorn_argv(ECHO_ASGI, realip="H11Protocol"),
    "uvicorn-httptools": uvicorn_argv(ECHO_ASGI, realip="HttpToolsProtocol"),
    "gunicorn-realip-uvicorn-worker": gunicorn_argv(ECHO_ASGI, worker="realip.gunicorn.UvicornWorker"),
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toa_emulator.build(tmp_path_factory.mktemp("toa-emulator"))


def send_and_reset(source: str, port: int, request: bytes) -> None:
    """Connect from ``source``, send ``request`` and reset at once (SO_LINGER 0): no FIN, an RST."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(request)


def exchange(source: str, port: int, data: bytes, *, responses: int) -> list[dict[str, Any]]:
    """Send ``data`` on one connection from ``source``; the JSON bodies of the first ``responses``
    answers (the echo app's bodies are one line each), read until then or a 10 s deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        buffer = b""
        deadline = time.monotonic() + 10
        while buffer.count(b'{"client"') < responses and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # closed with the request unread
                break
            if not chunk:
                break
            buffer += chunk
    return [json.loads(line) for line in buffer.split(b"\r\n") if line.startswith(b'{"client"')]


def get(xff: str | None = None, *, extra: str = "") -> bytes:
    forged = f"X-Forwarded-For: {xff}\r\n" if xff else ""
    return f"GET / HTTP/1.1\r\nHost: backend\r\n{forged}{extra}\r\n".encode()


# --------------------------------------------------------------- 1. the reset race


@pytest.mark.parametrize("name", sorted(UVICORN_SERVERS))
def test_reset_connection_is_never_taken_for_a_unix_socket_peer(name: str, tmp_path: Path) -> None:
    """A client that resets right after its request leaves uvicorn without a peer address
    (getpeername() fails). With trust_unix_socket_peers on, realip once took that for a
    Unix-socket proxy and believed the client's X-Forwarded-For (hundreds in a thousand)."""
    env = {"REALIP_TRUST_UNIX_SOCKET_PEERS": "on", "REALIP_TRUSTED_PROXIES": "10.0.0.1"}
    with serve(name, UVICORN_SERVERS[name], tmp_path, family="v4", env=env) as server:
        for _ in range(300):
            with contextlib.suppress(OSError):
                send_and_reset("127.0.0.2", server.port, get(FORGED))
        body, _ = whoami(server.url(), "127.0.0.3")  # still serving
        assert body["client"][0] == "127.0.0.3"
        time.sleep(0.5)
        log = server.log()
    assert FORGED not in log


def test_unix_socket_rule_needs_a_unix_listener() -> None:
    """In-process: no client address on a TCP listener (``server`` has a port) is never a Unix peer."""
    options = {"trusted_proxies": "10.0.0.1", "trust_unix_socket_peers": True}
    tcp = run_asgi(options, {"client": None, "server": ("127.0.0.1", 8000)}, [("x-forwarded-for", FORGED)])
    assert tcp["client"] is None and tcp["extensions"]["realip"].source == "peer"
    assert not any(k == b"x-forwarded-for" for k, _ in tcp["headers"])  # stripped: nobody vouched for it
    unix = run_asgi(options, {"client": None, "server": None}, [("x-forwarded-for", "1.2.3.4")])
    assert unix["client"] == ("1.2.3.4", 0) and unix["extensions"]["realip"].hops == ()


@pytest.mark.parametrize("name", ["uvicorn-httptools", "gunicorn-realip-uvicorn-worker"])
def test_reset_load_balancer_connection_is_not_served_as_the_load_balancer(
    name: str, tmp_path: Path, emulator: Path
) -> None:
    """With the TOA module loaded, a reset connection answers ENOTCONN: it once ran as the
    load balancer (100.125.x.x here 127.0.0.5) and was logged as "unexpected"."""
    log = tmp_path / "lookups.log"
    env = {
        **toa_emulator.env({"127.0.0.5": "nat64:[2001:db8::5]:40000"}, log, library=emulator),
        "REALIP_TOA_PEERS": "127.0.0.5",
    }
    with serve(name, UVICORN_SERVERS[name], tmp_path, family="v4", env=env) as server:
        for _ in range(200):
            with contextlib.suppress(OSError):
                send_and_reset("127.0.0.5", server.port, get())
        body, _ = whoami(server.url(), "127.0.0.5")
        assert body["client"] == ["2001:db8::5", 40000]
        time.sleep(0.5)
        text = server.log()
    gone = [e for e in toa_emulator.read_log(log) if e.result != 0]
    assert "unexpected TOA lookup error" not in text
    # Every request that ran was the NAT64 client's: none ran as the load balancer.
    assert "127.0.0.5:" not in text.replace("Uvicorn running", "")
    print(f"{name}: {len(gone)} lookups found the connection gone")  # the race was exercised when > 0


@pytest.mark.parametrize(
    ("name", "argv"),
    [("uvicorn-httptools", UVICORN_SERVERS["uvicorn-httptools"]),
     ("gunicorn-gthread", gunicorn_argv(ECHO_WSGI, worker="gthread")),
     ("werkzeug", werkzeug_argv(ECHO_WSGI))],
)  # fmt: skip
def test_lookup_answering_enotconn_never_runs_the_app_as_the_load_balancer(
    name: str, argv: list[str], tmp_path: Path, emulator: Path
) -> None:
    """The reset can land between getpeername() and the lookup, which then answers ENOTCONN
    (the emulator's ``errno:107`` makes that window certain): the app must not run."""
    log = tmp_path / "lookups.log"
    env = {**toa_emulator.env({"127.0.0.12": "errno:107"}, log, library=emulator), "REALIP_TOA_PEERS": "127.0.0.12"}
    with serve(name, argv, tmp_path, family="v4", env=env) as srv:
        for _ in range(3):
            raw = exchange("127.0.0.12", srv.port, get(FORGED), responses=1)
            assert raw == []  # closed (uvicorn) or answered without the app (WSGI)
        body, _ = whoami(srv.url(), "127.0.0.3")  # the server goes on serving
        assert body["client"][0] == "127.0.0.3"
        text = srv.log()
    assert toa_emulator.count_lookups(log) == 3
    assert "unexpected TOA lookup error" not in text
    assert '"client": ["127.0.0.12"' not in text


# ------------------------------------------------- 2. gunicorn's PROXY protocol keep-alive


V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + b"\x20\x00\x00\x00"  # PROXY v2, command LOCAL (a health check)


@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_gunicorn_proxy_protocol_answer_holds_for_every_request_of_the_connection(worker: str, tmp_path: Path) -> None:
    """gunicorn's gthread worker puts the PROXY source into the first request's environ only;
    the next requests on the connection once fell back to the load balancer, and, it being a
    trusted proxy, the client's own X-Forwarded-For was believed. (The sync worker serves one
    request per connection: there the first request is the only one.)"""
    argv = gunicorn_argv(
        ECHO_WSGI, worker=worker,
        extra=["--proxy-protocol", "auto", "--proxy-allow-from", "127.0.0.10,::ffff:127.0.0.10", "--keep-alive", "5",
               "--threads", "1" if worker == "sync" else "4"],  # more threads turn sync into gthread
    )  # fmt: skip
    env = {"REALIP_TRUSTED_PROXIES": "127.0.0.10"}  # the load balancer is also a trusted proxy
    with serve(
        f"gunicorn-{worker}", argv, tmp_path, family="v4", env=env, ready=False, ready_log="Booting worker"
    ) as srv:
        time.sleep(0.5)
        header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n"
        bodies = exchange("127.0.0.10", srv.port, header + get() + get(FORGED) + get(FORGED), responses=3)
        health = exchange("127.0.0.10", srv.port, V2_LOCAL + get() + get(), responses=2)
        log = srv.log()
    assert f"Using worker: {worker}" in log
    requests = 1 if worker == "sync" else 3
    assert [b["client"] for b in bodies] == [["203.0.113.7", 40000]] * requests
    assert [b["source"] for b in bodies] == ["proxy-protocol"] * requests
    # A health check (LOCAL): the load balancer itself is the client, on every request.
    assert [b["client"][0] for b in health] == ["127.0.0.10"] * (1 if worker == "sync" else 2)


# ---------------------------------------------------------------- 3. WebSockets


@pytest.mark.parametrize("ws", ["auto", "websockets-sansio", "wsproto"])
def test_websocket_with_uvicorns_own_ws_class_gets_the_toa_client(ws: str, tmp_path: Path, emulator: Path) -> None:
    log = tmp_path / "lookups.log"
    env = {
        **toa_emulator.env({"127.0.0.5": "nat64:[2001:db8::5]:40000"}, log, library=emulator),
        "REALIP_TOA_PEERS": "127.0.0.5",
    }
    argv = uvicorn_argv(ECHO_ASGI, http="realip.uvicorn:HttpToolsProtocol", ws=ws)  # uvicorn's own --ws
    with serve("uvicorn", argv, tmp_path, family="v4", env=env) as srv:
        for _ in range(3):
            message = websocket_whoami(f"ws://127.0.0.1:{srv.port}/ws", "127.0.0.5")
            assert message["client"] == ["2001:db8::5", 40000]
            assert message["source"] == "toa"
    assert toa_emulator.count_lookups(log) == 3  # one per connection, the upgrade took it over


# ---------------------------------------------------------- 4. options that did nothing


def toa_connection(lb: str = "100.125.0.9") -> Resolution:
    answer = TOAAnswer(TOAStatus.FOUND, __import__("ipaddress").ip_address("2001:db8::5"), 40000)
    return Resolution(client=("2001:db8::5", 40000), peer=(lb, 5555), source="toa", hops=(lb,), toa=answer)


def run_asgi(options: dict[str, Any], scope: dict[str, Any], headers: list[tuple[str, str]]) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope)

    full = {"type": "http", "scheme": "http", "headers": [(k.encode(), v.encode()) for k, v in headers], **scope}
    asyncio.run(RealIPMiddleware(app, environ={}, **options)(full, None, None))  # type: ignore[arg-type]
    return seen[0]


def run_wsgi(options: dict[str, Any], environ: dict[str, Any]) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        seen.append(environ)
        return [b""]

    base = {"REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "1234", "wsgi.url_scheme": "http", "SERVER_PORT": "80"}
    list(RealIPWSGIMiddleware(app, environ={}, **options)({**base, **environ}, lambda *a: None))
    return seen[0]


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, ("2001:db8::5", 40000)), ({"toa": False}, ("100.125.0.9", 5555)),
     ({"toa_peers": ["10.0.0.0/8"]}, ("100.125.0.9", 5555)),
     ({"toa_peers": ["100.125.0.0/16"]}, ("2001:db8::5", 40000))],
)  # fmt: skip
def test_middleware_toa_options_act_on_the_integrations_answer(options: dict, expected: tuple) -> None:
    scope = run_asgi(
        options, {"client": ("100.125.0.9", 5555), "extensions": {"realip.connection": toa_connection()}}, []
    )
    assert scope["client"] == expected


def test_unknown_realip_variable_is_reported_with_the_likely_name(caplog: pytest.LogCaptureFixture) -> None:
    from realip.config import Settings

    with caplog.at_level(logging.WARNING, logger="realip"):
        Settings.build(environ={"REALIP_TRUSTED_PROXY": "10.0.0.1"})
    assert "REALIP_TRUSTED_PROXY is not a realip setting" in caplog.text
    assert "did you mean REALIP_TRUSTED_PROXIES?" in caplog.text


# ------------------------------------------------ 5. peers the kernel module rewrote


@pytest.mark.parametrize(
    ("name", "argv"),
    [("uvicorn-httptools", uvicorn_argv(ECHO_ASGI, realip="HttpToolsProtocol")),
     ("gunicorn-gthread", gunicorn_argv(ECHO_WSGI, worker="gthread")),
     ("gunicorn-sync", gunicorn_argv(ECHO_WSGI, worker="sync"))],
)  # fmt: skip
@pytest.mark.parametrize(
    ("family", "rule", "trusted", "client"),
    [("v4", "v4toa:[10.0.0.1]:4000", "10.0.0.1", "127.0.0.2"),  # IPv4 TOA on an AF_INET listener
     ("dual", "nat64:[2001:db8::1]:4000", "2001:db8::1", "127.0.0.2")],  # NAT64 on a dual-stack listener
)  # fmt: skip
def test_peer_rewritten_by_the_toa_module_is_never_a_trusted_proxy(
    name: str, argv: list[str], family: str, rule: str, trusted: str, client: str, tmp_path: Path, emulator: Path
) -> None:
    """Anyone can put a TOA option in its own handshake; the module then makes getpeername()
    report that address. Pointed at a trusted proxy's address, it once made realip believe
    the client's own X-Forwarded-For."""
    env = {
        **toa_emulator.env({client: rule}, tmp_path / "lookups.log", library=emulator),
        "REALIP_TRUSTED_PROXIES": trusted,
    }
    with serve(name, argv, tmp_path, family=family, env=env) as srv:
        body, _ = whoami(srv.url(), client, headers={"X-Forwarded-For": FORGED})
    assert body["client"] == [trusted, 4000]
    assert body["source"] == "toa"  # provenance: the address came from a TCP option
    assert body["hops"] == []
    assert "x-forwarded-for" not in body["headers"]  # not believed, and stripped


# ----------------------------------------------------------- 6. stripping


def every_spelling() -> list[tuple[str, str]]:
    return [(spelling, FORGED) for name in FORWARDING_HEADERS for spelling in (name, name.replace("-", "_"))]


@pytest.mark.parametrize(
    "options", [{}, {"trusted_proxies": "10.0.0.1"}, {"strategy": "x-real-ip", "trusted_proxies": "10.0.0.1"}]
)
def test_every_forwarding_header_is_stripped_from_untrusted_peers(options: dict) -> None:
    assert {"x-forwarded-for", "x-real-ip", "forwarded", "true-client-ip", "cf-connecting-ip", "x-client-ip",
            "x-cluster-client-ip", "fastly-client-ip", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
            "x-forwarded-prefix"} <= set(FORWARDING_HEADERS)  # fmt: skip
    scope = run_asgi(options, {"client": ("203.0.113.9", 1)}, [("host", "backend"), *every_spelling()])
    assert scope["headers"] == [(b"host", b"backend")]
    environ = run_wsgi(options, {("HTTP_" + k.upper().replace("-", "_")): v for k, v in every_spelling()})
    assert [k for k in environ if k.startswith("HTTP_")] == []


def test_raw_headers_are_kept_when_asked() -> None:
    scope = run_asgi({"strip_untrusted_headers": False}, {"client": ("203.0.113.9", 1)}, every_spelling())
    assert len(scope["headers"]) == 2 * len(FORWARDING_HEADERS)


def test_underscore_spelling_is_never_read_under_asgi() -> None:
    scope = run_asgi({"trusted_proxies": "10.0.0.1"}, {"client": ("10.0.0.1", 1)}, [("x_forwarded_for", FORGED)])
    assert scope["client"] == ("10.0.0.1", 1)


# ---------------------------------------------------------------- 7. schemes


@pytest.mark.parametrize("proto", ["javascript", "data", "file", "<x>", "ftp"])
def test_forwarded_proto_allows_http_https_ws_wss_only(proto: str, caplog: pytest.LogCaptureFixture) -> None:
    options = {"trusted_proxies": "10.0.0.1", "forwarded_proto": True}
    headers = [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", proto)]
    scope = run_asgi(options, {"client": ("10.0.0.1", 1)}, headers)
    assert scope["scheme"] == "http"
    assert "is not http, https, ws or wss" in scope["extensions"]["realip"].error
    forwarded = run_asgi({**options, "strategy": "forwarded"}, {"client": ("10.0.0.1", 1)},
                         [("forwarded", f"for=1.2.3.4;proto={proto}")])  # fmt: skip
    assert forwarded["scheme"] == "http"
    environ = run_wsgi(options, {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4",
                                 "HTTP_X_FORWARDED_PROTO": proto})  # fmt: skip
    assert environ["wsgi.url_scheme"] == "http"


# ------------------------------------------------------- 8. trust configuration


@pytest.mark.parametrize(
    ("value", "message"),
    [("0.0.0.0/0", "covers every IPv4 address"), ("::/0", "covers every IPv6 address"),
     ("::ffff:0:0/96", "covers every IPv4 address"), ("*", "trust_all_peers_unsafe"),
     ("10.0.0.1 10.0.0.2", "separate entries with commas"), ("proxy.example.com", "hostnames are not resolved")],
)  # fmt: skip
def test_trust_configuration_mistakes_fail_at_start_up(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies") as caught:
        RealIPMiddleware(lambda *a: None, environ={}, trusted_proxies=value)  # type: ignore[arg-type,return-value]
    assert message in str(caught.value)


def test_whole_family_is_allowed_only_with_the_unsafe_option() -> None:
    RealIPMiddleware(lambda *a: None, environ={}, trusted_proxies="0.0.0.0/0", trust_all_peers_unsafe=True)  # type: ignore[arg-type,return-value]


def test_none_means_no_proxies_and_wide_networks_warn(caplog: pytest.LogCaptureFixture) -> None:
    assert not RealIPMiddleware(lambda *a: None, environ={}, trusted_proxies=None).settings.trusted_proxies  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.WARNING, logger="realip"):
        RealIPMiddleware(lambda *a: None, environ={}, trusted_proxies="10.0.0.0/7")  # type: ignore[arg-type,return-value]
    assert "10.0.0.0/7 is very wide" in caplog.text


# ------------------------------------------------- 10. uvicorn's own proxy headers


def test_realip_integration_turns_uvicorns_proxy_headers_off(tmp_path: Path) -> None:
    """Plain uvicorn trusts X-Forwarded-For from 127.0.0.1 by default; under realip's protocols it does not."""
    argv = [a for a in uvicorn_argv(ECHO_ASGI, realip="HttpToolsProtocol") if a != "--no-proxy-headers"]
    with serve("uvicorn", argv, tmp_path, family="v4") as srv:  # uvicorn's trust does not match ::ffff:127.0.0.1
        body, _ = whoami(srv.url(), "127.0.0.1", headers={"X-Forwarded-For": FORGED})
        log = srv.log()
    assert body["client"][0] == "127.0.0.1"
    assert "uvicorn's proxy headers are off on realip's connections" in log


def test_middleware_says_when_the_server_rewrote_the_client_first(tmp_path: Path) -> None:
    argv = [a for a in uvicorn_argv(ECHO_ASGI) if a != "--no-proxy-headers"]  # no integration: the unsafe setup
    with serve("uvicorn", argv, tmp_path, family="v4") as srv:
        whoami(srv.url(), "127.0.0.1", headers={"X-Forwarded-For": FORGED})
        log = srv.wait_for_log("--no-proxy-headers")
    assert "took the client address from X-Forwarded-For before realip" in log
