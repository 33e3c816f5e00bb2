"""PROXY protocol behind a real HAProxy, and hostile bytes at the socket.

HAProxy (Debian's package) runs ``tests/proxies/haproxy-send-proxy.cfg`` in
TCP mode, connecting from ``127.0.0.10`` (the one peer allowed to send PROXY
headers) to uvicorn running realip's protocol classes.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support.clients import client, local_port, websocket_whoami
from .support.proxies import haproxy
from .support.servers import Server, gunicorn_argv, serve, uvicorn_argv, uvicorn_run_argv

LB = "127.0.0.10"
SEND = {
    "v1": "send-proxy",
    "v2": "send-proxy-v2 proxy-v2-options unique-id,crc32c",
}


ENV = {
    "REALIP_PROXY_PROTOCOL": "on",
    "REALIP_PROXY_PROTOCOL_PEERS": LB,
    "REALIP_PROXY_PROTOCOL_TIMEOUT": "1",
    "REALIP_TOA": "off",
}


SERVERS = {
    "H11Protocol": uvicorn_argv("tests.apps.echo:asgi_app", realip="H11Protocol"),
    "HttpToolsProtocol": uvicorn_argv("tests.apps.echo:asgi_app", realip="HttpToolsProtocol"),
    "gunicorn-realip-worker": gunicorn_argv("tests.apps.echo:asgi_app", worker="realip.gunicorn.UvicornWorker"),
    "uvicorn-run-in-code": uvicorn_run_argv(
        "tests.apps.echo:asgi_app", proxy_protocol=True, proxy_protocol_peers=LB, proxy_protocol_timeout=1, toa=False
    ),
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    # A plain GET would be refused (not from the load balancer): wait for the log instead.
    ready = "Application startup complete"
    with serve(request.param, SERVERS[request.param], tmp, env=ENV, ready=False, ready_log=ready) as server:
        server.extra["tmp"] = tmp
        yield server


@pytest.fixture(scope="module", params=sorted(SEND))
def lb(request: pytest.FixtureRequest, app: Server) -> Iterator[tuple[int, Path, str]]:
    values = {"UPSTREAM": app.port, "BIND": LB, "SEND_PROXY": SEND[request.param]}
    with haproxy(app.extra["tmp"], "haproxy-send-proxy.cfg", **values) as (port, log):  # type: ignore[arg-type]
        yield port, log, request.param


def get(port: int, source: str) -> tuple[dict[str, Any], int]:
    host = "[::1]" if ":" in source else "127.0.0.1"
    with client(source) as c, c.stream("GET", f"http://{host}:{port}/") as response:
        own_port = local_port(response)
        response.read()
    assert response.status_code == 200
    return response.json(), own_port


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3", "::1"])
def test_client_through_haproxy(lb: tuple[int, Path, str], source: str) -> None:
    port, _, version = lb
    body, own_port = get(port, source)
    assert body["client"] == [source, own_port]
    assert body["source"] == "proxy-protocol"
    assert body["hops"] == [LB]
    pp = body["proxy_protocol"]
    assert pp["version"] == int(version[1]) and pp["command"] == "proxy"
    assert pp["family"] == ("tcp6" if ":" in source else "tcp4")
    assert pp["destination"][1] == port
    if version == "v2":
        assert pp["crc32c_verified"] is True
        # unique-id-format %{+X}o%ci:%cp_...: the client's address and port in hex, as HAProxy saw them.
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        assert pp["unique_id"].startswith(f"{socket.inet_pton(family, source).hex().upper()}:{own_port:04X}_")
        assert 0x05 in pp["tlv_types"]  # PP2_TYPE_UNIQUE_ID


def test_keepalive_through_haproxy(lb: tuple[int, Path, str]) -> None:
    port, _, _ = lb
    with client("127.0.0.3") as c:
        seen = set()
        for _ in range(10):
            with c.stream("GET", f"http://127.0.0.1:{port}/") as response:
                seen.add(local_port(response))
                response.read()
            assert response.json()["client"][0] == "127.0.0.3"
    assert len(seen) == 1


def test_websocket_through_haproxy(lb: tuple[int, Path, str]) -> None:
    port, _, _ = lb
    message = websocket_whoami(f"ws://127.0.0.1:{port}/ws", "127.0.0.2")
    assert message["client"][0] == "127.0.0.2"
    assert message["source"] == "proxy-protocol"


def test_haproxy_health_checks_with_local_header_succeed(lb: tuple[int, Path, str], app: Server) -> None:
    _, log, _ = lb
    # HAProxy checks every 500 ms over a connection that starts with a v2 LOCAL
    # header; the app serves them with the load balancer itself as the client.
    checks = app.wait_for_log(f"{LB}:", timeout=10)
    assert f"{LB}:" in checks and '"GET /health' in checks
    time.sleep(1.2)  # two more check intervals: a failing check would mark the server DOWN
    assert "DOWN" not in log.read_text(), log.read_text()[-2000:]


# ---------------------------------------------------------------- hostile input at the socket

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src: str, sport: int, *, length_delta: int = 0, tlvs: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, 80) + tlvs
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body) + length_delta) + body


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def exchange(port: int, chunks: list[bytes], *, source: str = LB, pause: float = 0.0, timeout: float = 5.0) -> bytes:
    """Send ``chunks`` from ``source``; everything the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            if pause:
                time.sleep(pause)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        return answer


def still_serving(app: Server) -> None:
    answer = exchange(app.port, [b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n" + REQUEST])
    assert b"198.51.100.1" in answer


def test_header_split_into_one_byte_writes_is_read(app: Server) -> None:
    data = v2("198.51.100.7", 4242) + REQUEST
    answer = exchange(app.port, [data[i : i + 1] for i in range(len(data))])
    assert b'"client": ["198.51.100.7", 4242]' in answer


def test_v1_split_mid_line_is_read(app: Server) -> None:
    answer = exchange(app.port, [b"PROXY TCP6 2001:db8::", b"9 ::1 4000 80\r", b"\n" + REQUEST], pause=0.05)
    assert b'"client": ["2001:db8::9", 4000]' in answer


HOSTILE = {
    "truncated-then-eof": [b"PROXY TCP4 198.51.100.1 127.0.0.1"],
    "oversized-v1": [b"PROXY TCP4 " + b"1" * 120 + b"\r\n" + REQUEST],
    "v1-bad-address": [b"PROXY TCP4 999.1.1.1 127.0.0.1 1 80\r\n" + REQUEST],
    "v1-bad-port": [b"PROXY TCP4 198.51.100.1 127.0.0.1 99999 80\r\n" + REQUEST],
    "v1-family-mismatch": [b"PROXY TCP4 2001:db8::1 127.0.0.1 1 80\r\n" + REQUEST],
    "v1-lf-only": [b"PROXY TCP4 198.51.100.1 127.0.0.1 1 80\n" + REQUEST],
    "no-header-at-all": [REQUEST],
    "v2-length-too-short": [v2("198.51.100.1", 1, length_delta=-4) + REQUEST],
    "v2-length-huge": [v2("198.51.100.1", 1, length_delta=60000) + REQUEST],
    "v2-bad-crc32c": [v2("198.51.100.1", 1, tlvs=b"\x03\x00\x04\xde\xad\xbe\xef") + REQUEST],
    "v2-bad-tlv-length": [v2("198.51.100.1", 1, tlvs=b"\x05\x00\x09abc") + REQUEST],
}


@pytest.mark.parametrize("chunks", HOSTILE.values(), ids=HOSTILE.keys())
def test_malformed_header_closes_the_connection_and_nothing_reaches_the_app(app: Server, chunks: list[bytes]) -> None:
    before = app.log().count('"GET / HTTP/1.1"')
    answer = exchange(app.port, chunks)
    assert answer == b""
    still_serving(app)
    assert app.log().count('"GET / HTTP/1.1"') == before + 1  # only still_serving's request
    assert "connection closed" in app.log()


def test_slow_header_is_cut_off_at_the_timeout(app: Server) -> None:
    started = time.monotonic()
    answer = exchange(app.port, [b"PROXY TCP4 198.51.100.1 "], timeout=8)
    elapsed = time.monotonic() - started
    assert answer == b""
    assert 0.8 < elapsed < 5, elapsed  # REALIP_PROXY_PROTOCOL_TIMEOUT=1
    assert "PROXY header not complete in time" in app.log()
    still_serving(app)


def test_peer_not_on_the_allow_list_is_closed(app: Server) -> None:
    answer = exchange(app.port, [b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n" + REQUEST], source="127.0.0.2")
    assert answer == b""
    assert "peer may not send a PROXY header" in app.log()
    still_serving(app)


# ---------------------------------------------------------------- gunicorn's own PROXY protocol (WSGI)


@pytest.fixture(scope="module", params=sorted(SEND))
def gunicorn_lb(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Server]]:
    tmp = tmp_path_factory.mktemp(f"gunicorn-{request.param}")
    # gunicorn compares the peer as reported: on a dual-stack socket that is ::ffff:127.0.0.10,
    # which its allow-list does not match with 127.0.0.10 alone (docs/proxy-protocol.md).
    allow = f"{LB},::ffff:{LB}"
    argv = gunicorn_argv(
        "tests.apps.echo:wsgi_app", worker="gthread", extra=["--proxy-protocol", "auto", "--proxy-allow-from", allow]
    )
    with serve("gunicorn", argv, tmp, ready=False, ready_log="Booting worker") as app:
        values = {"UPSTREAM": app.port, "BIND": LB, "SEND_PROXY": SEND[request.param]}
        with haproxy(tmp, "haproxy-send-proxy.cfg", **values) as (port, _):  # type: ignore[arg-type]
            yield port, app


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
def test_gunicorn_parses_and_realip_reads_what_it_found(gunicorn_lb: tuple[int, Server], source: str) -> None:
    port, _ = gunicorn_lb
    body, own_port = get(port, source)
    assert body["client"] == [source, own_port]
    assert body["source"] == "proxy-protocol"
    assert body["peer"][0] == f"::ffff:{LB}" and body["hops"] == [LB]


def test_gunicorn_local_health_checks_get_the_load_balancer_not_none(gunicorn_lb: tuple[int, Server]) -> None:
    _, app = gunicorn_lb
    # gunicorn leaves REMOTE_ADDR as None for LOCAL; realip puts the socket peer there,
    # so gunicorn's access log names the load balancer.
    text = app.wait_for_log(f"{LB} - ", timeout=10)
    assert f"{LB} - - " in text and '"GET /health' in text
    assert "None - -" not in text
