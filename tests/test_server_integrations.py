"""gunicorn's own ASGI worker, Hypercorn (asyncio and trio) and daphne with realip's integrations.

Each server runs as the docs say to start it (``tests/support/integrations.py``):

* behind a real HAProxy sending PROXY protocol v1 and v2 (with TLVs and a
  CRC32C), health checks included, with realip's parser and its allow-list
  (``127.0.0.10`` is the load balancer); hostile headers at the socket;
* with the TOA emulator (``LD_PRELOAD``): NAT64 clients behind a trusted load
  balancer, one lookup per connection, keep-alive, WebSocket, HTTP/2 streams;
* on a dual-stack socket: ``::ffff:`` peers unwrapped, IPv6 clients as they are;
* TLS with ALPN h2 (a certificate made here by ``trustme``);
* gunicorn reading the PROXY header itself (``--proxy-protocol``).

The last test writes ``docs/_generated/servers.md`` from
``tests/support/server_table.py``, whose every "yes" names the test that shows it.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import test_toa_servers, toa_emulator
from .support import server_table
from .support.clients import client, local_port, websocket_whoami, whoami
from .support.integrations import INTEGRATIONS, Integration
from .support.proxies import haproxy
from .support.servers import ROOT, Server, serve, tool
from .test_haproxy import HOSTILE, REQUEST, exchange, still_serving, v2
from .test_toa_servers import RULES, TOA_PEERS, lookups

#: The TOA emulator, built once per session (the fixture of tests/test_toa_servers.py).
emulator = test_toa_servers.emulator

LB = "127.0.0.10"
SEND = {
    "v1": "send-proxy",
    "v2": "send-proxy-v2 proxy-v2-options unique-id,crc32c",
}
PROXY_ENV = {
    "REALIP_PROXY_PROTOCOL": "on",
    "REALIP_PROXY_PROTOCOL_PEERS": LB,
    "REALIP_PROXY_PROTOCOL_TIMEOUT": "1",
    "REALIP_TOA": "off",
}
NAMES = sorted(INTEGRATIONS)
#: A request line of ``GET /`` in any of these servers' access logs (not ``/health``).
GET_ROOT = re.compile(r'"GET /(?: |")')


def requests_logged(server: Server) -> int:
    return len(GET_ROOT.findall(server.log()))


def ready_when(server: Server, count: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not count() and time.monotonic() < deadline:
        time.sleep(0.05)


# ------------------------------------------------------------------------------ PROXY protocol


@pytest.fixture(scope="module", params=NAMES)
def pp_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    spec: Integration = INTEGRATIONS[request.param]
    tmp = tmp_path_factory.mktemp(f"pp-{request.param}")
    # A plain GET would be refused (not from the load balancer): wait for the log instead.
    with serve(
        request.param, spec.argv(), tmp, family="v4", env=PROXY_ENV, ready=False, ready_log=spec.ready_log
    ) as app:
        app.extra["tmp"] = tmp
        yield app


@pytest.fixture(scope="module", params=sorted(SEND))
def lb(request: pytest.FixtureRequest, pp_app: Server) -> Iterator[tuple[int, Path, str]]:
    values = {"UPSTREAM": pp_app.port, "BIND": LB, "SEND_PROXY": SEND[request.param]}
    with haproxy(pp_app.extra["tmp"], "haproxy-send-proxy.cfg", **values) as (port, log):  # type: ignore[arg-type]
        yield port, log, request.param


def through(port: int, source: str) -> tuple[dict[str, Any], int]:
    host = "[::1]" if ":" in source else "127.0.0.1"
    with client(source) as c, c.stream("GET", f"http://{host}:{port}/") as response:
        own_port = local_port(response)
        response.read()
    assert response.status_code == 200
    return response.json(), own_port


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
def test_client_through_haproxy(lb: tuple[int, Path, str], source: str) -> None:
    port, _, version = lb
    body, own_port = through(port, source)
    assert body["client"] == [source, own_port]
    assert body["source"] == "proxy-protocol" and body["hops"] == [LB]
    pp = body["proxy_protocol"]
    assert pp["version"] == int(version[1]) and pp["family"] == ("tcp6" if ":" in source else "tcp4")
    if version == "v2":
        assert pp["crc32c_verified"] is True
        assert 0x05 in pp["tlv_types"]  # PP2_TYPE_UNIQUE_ID
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        assert pp["unique_id"].startswith(f"{socket.inet_pton(family, source).hex().upper()}:{own_port:04X}_")


def test_keepalive_through_haproxy_keeps_the_connections_answer(lb: tuple[int, Path, str]) -> None:
    port, _, _ = lb
    ports = set()
    with client("127.0.0.3") as c:
        for _ in range(5):
            with c.stream("GET", f"http://127.0.0.1:{port}/") as response:
                ports.add(local_port(response))
                response.read()
            assert response.json()["client"][0] == "127.0.0.3"
            assert response.json()["source"] == "proxy-protocol"
    assert len(ports) == 1


def test_websocket_through_haproxy(lb: tuple[int, Path, str]) -> None:
    port, _, _ = lb
    message = websocket_whoami(f"ws://127.0.0.1:{port}/ws", "127.0.0.2")
    assert message["client"][0] == "127.0.0.2"
    assert message["source"] == "proxy-protocol" and message["hops"] == [LB]


def test_access_log_shows_the_client_through_haproxy(lb: tuple[int, Path, str], pp_app: Server) -> None:
    port, _, _ = lb
    since = len(pp_app.log())
    through(port, "127.0.0.44")
    assert "127.0.0.44" in pp_app.wait_for_log("127.0.0.44", since=since)


def test_health_checks_with_local_header_succeed(lb: tuple[int, Path, str], pp_app: Server) -> None:
    _, log, _ = lb

    # HAProxy checks every 500 ms over connections that start with a PROXY header for the
    # check itself (v2: LOCAL); the load balancer is the client, and the check passes.
    def checks() -> int:
        return sum(1 for line in pp_app.log().splitlines() if LB in line and "GET /health" in line)

    ready_when(pp_app, lambda: checks() >= 3)
    assert checks() >= 3, pp_app.log()[-2000:]
    assert "DOWN" not in log.read_text(), log.read_text()[-2000:]


def test_header_split_into_one_byte_writes_is_read(pp_app: Server) -> None:
    data = v2("198.51.100.7", 4242) + REQUEST
    answer = exchange(pp_app.port, [data[i : i + 1] for i in range(len(data))])
    assert b'"client": ["198.51.100.7", 4242]' in answer


@pytest.mark.parametrize("chunks", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_header_closes_the_connection_and_nothing_reaches_the_app(pp_app: Server, chunks: list[bytes]) -> None:
    before = requests_logged(pp_app)
    assert exchange(pp_app.port, chunks, timeout=3) == b""
    still_serving(pp_app)
    ready_when(pp_app, lambda: requests_logged(pp_app) > before)
    assert requests_logged(pp_app) == before + 1  # still_serving's request only
    assert "connection closed" in pp_app.log()


def test_slow_header_is_cut_off_at_the_timeout(pp_app: Server) -> None:
    started = time.monotonic()
    assert exchange(pp_app.port, [b"PROXY TCP4 198.51.100.1 "], timeout=8) == b""
    assert 0.8 < time.monotonic() - started < 5  # REALIP_PROXY_PROTOCOL_TIMEOUT=1
    assert "PROXY header not complete in time" in pp_app.log()
    still_serving(pp_app)


def test_peer_not_on_the_allow_list_is_refused(pp_app: Server) -> None:
    answer = exchange(pp_app.port, [b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n" + REQUEST], source="127.0.0.2")
    assert answer == b""
    assert "peer may not send a PROXY header: 127.0.0.2" in pp_app.log()
    still_serving(pp_app)


# ------------------------------------------------------------------------------ gunicorn's own --proxy-protocol


@pytest.fixture(scope="module", params=sorted(SEND))
def gunicorn_pp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Server]]:
    tmp = tmp_path_factory.mktemp(f"gunicorn-pp-{request.param}")
    # gunicorn compares the peer as reported; on a dual-stack socket that is ::ffff:127.0.0.10.
    argv = INTEGRATIONS["gunicorn-asgi"].argv("--proxy-protocol", "auto", "--proxy-allow-from", f"{LB},::ffff:{LB}")
    env = {"REALIP_TOA": "off"}
    with serve("gunicorn-pp", argv, tmp, env=env, ready=False, ready_log="ASGI server listening") as app:
        values = {"UPSTREAM": app.port, "BIND": LB, "SEND_PROXY": SEND[request.param]}
        with haproxy(tmp, "haproxy-send-proxy.cfg", **values) as (port, _):  # type: ignore[arg-type]
            yield port, app


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
def test_gunicorn_read_the_header_and_realip_reports_it(gunicorn_pp: tuple[int, Server], source: str) -> None:
    port, _ = gunicorn_pp
    body, own_port = through(port, source)
    assert body["client"] == [source, own_port]
    assert body["source"] == "proxy-protocol" and body["hops"] == [LB]
    assert body["peer"][0] == f"::ffff:{LB}"


def test_gunicorn_read_header_holds_for_every_request_and_the_websocket(gunicorn_pp: tuple[int, Server]) -> None:
    port, app = gunicorn_pp
    with client("127.0.0.3") as c:
        for _ in range(4):
            # The client's own X-Forwarded-For must not count: the answer is the connection's.
            body = c.get(f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": "6.6.6.6"}).json()
            assert body["client"][0] == "127.0.0.3" and body["source"] == "proxy-protocol"
    message = websocket_whoami(f"ws://127.0.0.1:{port}/ws", "127.0.0.2")
    assert message["client"][0] == "127.0.0.2" and message["source"] == "proxy-protocol"
    assert "127.0.0.3 - - " in app.wait_for_log("127.0.0.3 - - ")  # gunicorn's access log


def test_gunicorn_health_checks_show_the_load_balancer(gunicorn_pp: tuple[int, Server]) -> None:
    _, app = gunicorn_pp
    text = app.wait_for_log(f"{LB} - - ", timeout=10)
    assert f"{LB} - - " in text and "GET /health" in text


def test_gunicorn_and_realip_may_not_both_read_the_header(tmp_path: Path) -> None:
    argv = INTEGRATIONS["gunicorn-asgi"].argv("--proxy-protocol", "auto")
    argv = [a.replace("fd://{fd}", "127.0.0.1:0") for a in argv]
    env = {**os.environ, **PROXY_ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode != 0
    assert "--proxy-protocol and REALIP_PROXY_PROTOCOL would both read the PROXY header" in done.stderr + done.stdout


# ------------------------------------------------------------------------------ TOA (the emulator)


def _toa_env(tmp: Path, library: Path, **more: str) -> tuple[dict[str, str], Path]:
    log = tmp / "lookups.log"
    return {**toa_emulator.env(RULES, log, library=library), "REALIP_TOA_PEERS": TOA_PEERS, **more}, log


@pytest.fixture(scope="module", params=NAMES)
def toa_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: Path
) -> Iterator[Server]:
    spec: Integration = INTEGRATIONS[request.param]
    tmp = tmp_path_factory.mktemp(f"toa-{request.param}")
    env, log = _toa_env(tmp, emulator)
    with serve(request.param, spec.argv(*(spec.h2c or ())), tmp, family="v4", env=env) as app:
        app.extra["lookups"] = log
        app.extra["spec"] = spec
        yield app


def test_nat64_client_in_the_app_and_the_access_log(toa_app: Server) -> None:
    since = len(toa_app.log())
    body, port = whoami(toa_app.url(), "127.0.0.5")
    assert body["client"] == ["2001:db8::5", 40000]
    assert body["peer"] == ["127.0.0.5", port] and body["source"] == "toa"
    assert "2001:db8::5" in toa_app.wait_for_log("2001:db8::5", since=since)


def test_peer_outside_toa_peers_keeps_its_address_and_is_never_asked(toa_app: Server) -> None:
    body, port = whoami(toa_app.url(), "127.0.0.8")
    assert body["client"] == ["127.0.0.8", port] and body["source"] == "peer"
    assert lookups(toa_app, "127.0.0.8") == 0


def test_keepalive_costs_one_lookup_per_connection(toa_app: Server) -> None:
    for _ in range(2):  # a second connection is asked again
        before = lookups(toa_app, "127.0.0.5")
        ports = set()
        with client("127.0.0.5") as c:
            for _ in range(5):
                with c.stream("GET", toa_app.url()) as response:
                    ports.add(local_port(response))
                    response.read()
                assert response.json()["client"] == ["2001:db8::5", 40000]
        assert len(ports) == 1
        assert lookups(toa_app, "127.0.0.5") == before + 1


def test_websocket_gets_the_nat64_client_with_one_lookup(toa_app: Server) -> None:
    before = lookups(toa_app, "127.0.0.5")
    message = websocket_whoami(f"ws://127.0.0.1:{toa_app.port}/ws", "127.0.0.5")
    assert message["client"] == ["2001:db8::5", 40000] and message["source"] == "toa"
    assert lookups(toa_app, "127.0.0.5") == before + 1


def h2_client(source: str, **kwargs: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source, http1=False, http2=True, **kwargs)
    return httpx.Client(transport=transport, timeout=10.0)


def test_every_http2_stream_gets_the_connections_answer(toa_app: Server) -> None:
    if toa_app.extra["spec"].h2c is None:  # type: ignore[union-attr]
        # daphne speaks HTTP/2 over TLS only: the preface is refused, and the app never runs.
        before = requests_logged(toa_app)
        with h2_client("127.0.0.5") as c, pytest.raises(httpx.HTTPError):
            c.get(toa_app.url())
        assert requests_logged(toa_app) == before
        return
    before = lookups(toa_app, "127.0.0.5")
    with h2_client("127.0.0.5") as c:  # prior knowledge over plain http
        streams = set()
        for _ in range(5):
            response = c.get(toa_app.url())
            assert response.http_version == "HTTP/2"
            streams.add(response.extensions["stream_id"])
            assert response.json()["client"] == ["2001:db8::5", 40000] and response.json()["source"] == "toa"
    assert len(streams) == 5
    assert lookups(toa_app, "127.0.0.5") == before + 1


# ------------------------------------------------------------------------------ TLS with ALPN h2


@pytest.mark.parametrize("name", [name for name in NAMES if INTEGRATIONS[name].tls is not None])
def test_tls_with_alpn_h2_gets_the_nat64_client_and_refuses_a_proxy_header(
    name: str,
    tmp_path: Path,
    emulator: Path,
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    spec = INTEGRATIONS[name]
    tls = [a.replace("{cert}", str(cert_path)).replace("{key}", str(key_path)) for a in spec.tls or ()]
    # PROXY protocol on for the load balancer only; others (127.0.0.5) are served without a header.
    env, log = _toa_env(
        tmp_path, emulator, **{**PROXY_ENV, "REALIP_TOA": "on", "REALIP_PROXY_PROTOCOL_OTHERS": "serve"}
    )
    with serve(name, spec.argv(*tls), tmp_path, family="v4", env=env, ready=False, ready_log=spec.ready_log) as app:
        app.extra["lookups"] = log
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with h2_client("127.0.0.5", verify=context) as c:
            for _ in range(3):
                response = c.get(f"https://127.0.0.1:{app.port}/")
                assert response.http_version == "HTTP/2"
                assert response.json()["client"] == ["2001:db8::5", 40000] and response.json()["scheme"] == "https"
        assert lookups(app, "127.0.0.5") == 1
        # TLS comes first on this listener, so the load balancer's PROXY header cannot: its connection
        # is closed (before the handshake under trio, right after it under asyncio).
        answer = b""
        try:
            raw = socket.create_connection(("127.0.0.1", app.port), timeout=5, source_address=(LB, 0))
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock:
                tls_sock.sendall(b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n" + REQUEST)
                answer = tls_sock.recv(65536)
        except (ssl.SSLError, OSError):
            pass
        assert answer == b""
        assert "this is a TLS listener" in app.wait_for_log("this is a TLS listener")


# ------------------------------------------------------------------------------ dual-stack listeners


@pytest.mark.parametrize("name", NAMES)
def test_dual_stack_peers_are_unwrapped(name: str, tmp_path: Path) -> None:
    spec = INTEGRATIONS[name]
    with serve(name, spec.argv(dual_stack=True), tmp_path, family="dual") as app:
        for source in ("127.0.0.2", "::1"):
            host = "::1" if ":" in source else "127.0.0.1"
            body, port = whoami(app.url(host), source)
            assert body["client"] == [source, port]
            assert body["source"] == ("peer" if ":" in source else "mapped")
        message = websocket_whoami(f"ws://127.0.0.1:{app.port}/ws", "127.0.0.3")
        assert message["client"][0] == "127.0.0.3" and message["source"] == "mapped"
        assert "127.0.0.2" in app.wait_for_log("127.0.0.2")
        assert "::ffff:127.0.0.2" not in app.log()


# ------------------------------------------------------------------------------ servers that cannot


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_granian_is_named_with_what_works_instead(interface: str, tmp_path: Path) -> None:
    """Granian accepts connections in Rust: realip unwraps mapped peers, and names Granian
    and the servers that can give the connection (realip.servers._unsupported)."""
    app = f"tests.support.limitation_app:{interface}_app"
    argv = [tool("granian"), "--interface", interface, "--host", "::", "--port", "{port}", "--workers", "1", app]
    with serve(f"granian-{interface}", argv, tmp_path, family="dual") as srv:
        for source in ("127.0.0.2", "::1"):
            body, port = whoami(srv.url("::1" if ":" in source else "127.0.0.1"), source)
            assert body["client"] == [source, port if interface == "asgi" else 0]  # no REMOTE_PORT under WSGI
            assert body["source"] == ("peer" if ":" in source else "mapped")
        assert body["server"] == "Granian"
        assert "realip.gunicorn.ASGIWorker" in body["message"] and "python -m realip.hypercorn" in body["message"]


# ------------------------------------------------------------------------------ the generated table


def test_server_table_is_up_to_date() -> None:
    server_table.check_evidence()
    server_table.compare_or_regenerate()
