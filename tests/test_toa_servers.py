"""NAT64 behind a TOA load balancer, on real servers with the emulated module.

The kernel module cannot be loaded here, so each server process preloads
``tests/toa_emulator`` (an ``LD_PRELOAD`` library that answers
``getsockopt(IPPROTO_IP, 4096)`` exactly as docs/toa-module.md records the module
does). Loopback source addresses play the load balancers: a connection from
``127.0.0.5`` "carries" the NAT64 client ``[2001:db8::5]:40000``. The servers
listen on an AF_INET socket, the family docs/toa-module.md recommends behind NAT64.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import toa_emulator
from .support.clients import client, local_port, websocket_whoami, whoami
from .support.servers import (
    EXAMPLES,
    Server,
    gunicorn_argv,
    serve,
    uvicorn_argv,
    uvicorn_run_argv,
    uwsgi_argv,
    waitress_argv,
    werkzeug_argv,
)

DJANGO = EXAMPLES / "django_project"

RULES = {
    "127.0.0.5": "nat64:[2001:db8::5]:40000",  # a trusted load balancer with a NAT64 client
    "127.0.0.6": "nat64:[::ffff:198.51.100.7]:40001",  # the module answers in IPv4-mapped form
    "127.0.0.7": "errno:5",  # EIO: nothing the module is known to answer
    "127.0.0.8": "nat64:[2001:db8::8]:40008",  # carries an option but is not a trusted peer
    "127.0.0.9": "none",  # trusted, but this connection carried no option (EINVAL)
}
#: The "load balancers" whose TOA answers are believed. 127.0.0.8 is not one.
TOA_PEERS = "127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.9"


SERVERS = {
    "uvicorn-h11": (uvicorn_argv("fastapi_app:app", realip="H11Protocol"), EXAMPLES, True),
    "uvicorn-httptools": (uvicorn_argv("fastapi_app:app", realip="HttpToolsProtocol"), EXAMPLES, True),
    "gunicorn-realip-uvicorn-worker": (
        gunicorn_argv("fastapi_app:app", worker="realip.gunicorn.UvicornWorker"), EXAMPLES, True,
    ),
    "uvicorn-run-in-code": (uvicorn_run_argv("fastapi_app:app", http="h11", toa_peers=TOA_PEERS), EXAMPLES, True),
    "gunicorn-sync": (gunicorn_argv("flask_app:app", worker="sync"), EXAMPLES, False),
    "gunicorn-gthread": (gunicorn_argv("flask_app:app", worker="gthread"), EXAMPLES, True),
    "werkzeug": (werkzeug_argv("flask_app:app"), EXAMPLES, False),
    "uwsgi-http-socket": (uwsgi_argv("flask_app:app"), EXAMPLES, False),
    "django-gunicorn": (gunicorn_argv("project.wsgi", worker="gthread"), DJANGO, True),
}  # fmt: skip
#: uWSGI puts no REMOTE_PORT in the environ: a peer kept as the client has port 0 (unknown).
NO_PEER_PORT = {"uwsgi-http-socket"}


def peer_port(server: Server, port: int) -> int:
    return 0 if server.name in NO_PEER_PORT else port


#: name -> whether connections are kept alive (gunicorn sync and Werkzeug's HTTP/1.0 handler close
#: after each response, so they have no keep-alive connection to test)
KEEPALIVE = {name: spec[2] for name, spec in SERVERS.items()}


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toa_emulator.build(tmp_path_factory.mktemp("toa-emulator"))


def _start(name: str, tmp: Path, library: Path, *, module: bool = True) -> Iterator[Server]:
    argv, cwd, _ = SERVERS[name]
    log = tmp / "lookups.log"
    env = {**toa_emulator.env(RULES, log, library=library, module=module), "REALIP_TOA_PEERS": TOA_PEERS}
    with serve(name, argv, tmp, family="v4", env=env, cwd=cwd) as server:
        server.extra["lookups"] = log
        yield server


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: Path
) -> Iterator[Server]:
    yield from _start(request.param, tmp_path_factory.mktemp(request.param), emulator)


def lookups(server: Server, peer: str) -> int:
    return sum(1 for entry in toa_emulator.read_log(server.extra["lookups"]) if entry.peer == peer)  # type: ignore[arg-type]


def test_app_sees_the_nat64_client_and_its_port(server: Server) -> None:
    body, port = whoami(server.url(), "127.0.0.5")
    assert body["client"] == ["2001:db8::5", 40000]
    assert body["peer"] == ["127.0.0.5", peer_port(server, port)]
    assert body["source"] == "toa"


def test_access_log_shows_the_nat64_client(server: Server) -> None:
    whoami(server.url(), "127.0.0.5")
    if server.name == "uwsgi-http-socket":
        # uWSGI logs from its own request record, not from the WSGI environ:
        # its request log keeps showing the load balancer (docs/toa.md says so).
        text = server.wait_for_log("GET /")
        assert "127.0.0.5" in text and "2001:db8::5" not in text
        return
    text = server.wait_for_log("2001:db8::5")
    assert "2001:db8::5" in text


def test_ipv4_mapped_answer_is_unwrapped(server: Server) -> None:
    body, _ = whoami(server.url(), "127.0.0.6")
    assert body["client"] == ["198.51.100.7", 40001]
    assert body["source"] == "toa"


def test_peer_outside_trusted_networks_keeps_its_own_address_and_is_never_asked(server: Server) -> None:
    before = lookups(server, "127.0.0.8")
    body, port = whoami(server.url(), "127.0.0.8")
    assert body["client"] == ["127.0.0.8", peer_port(server, port)]
    assert body["source"] == "peer"
    assert lookups(server, "127.0.0.8") == before == 0


def test_connection_without_option_keeps_the_peer(server: Server) -> None:
    body, port = whoami(server.url(), "127.0.0.9")
    assert body["client"] == ["127.0.0.9", peer_port(server, port)]
    assert body["source"] == "peer"


def test_unexpected_errno_never_fails_a_request(server: Server) -> None:
    for _ in range(3):
        body, port = whoami(server.url(), "127.0.0.7")
        assert body["client"] == ["127.0.0.7", peer_port(server, port)]
    text = server.wait_for_log("unexpected TOA lookup error")
    assert "unexpected TOA lookup error: errno 5" in text
    assert text.count("unexpected TOA lookup error") == 1  # rate-limited


@pytest.mark.parametrize("name", sorted(name for name, keepalive in KEEPALIVE.items() if keepalive))
def test_keepalive_connection_costs_one_lookup(name: str, tmp_path: Path, emulator: Path) -> None:
    for srv in _start(name, tmp_path, emulator):
        for connection in range(2):  # a second connection is asked again: no stale answer
            ports = set()
            with client("127.0.0.5") as c:
                for _ in range(20):
                    with c.stream("GET", srv.url()) as response:
                        ports.add(local_port(response))
                        response.read()
                    assert response.json()["client"] == ["2001:db8::5", 40000]
            assert len(ports) == 1  # one connection carried all 20 requests
            assert lookups(srv, "127.0.0.5") == connection + 1


@pytest.mark.parametrize("name", ["uvicorn-h11", "uvicorn-httptools"])
def test_websocket_sees_the_nat64_client_with_one_lookup(name: str, tmp_path: Path, emulator: Path) -> None:
    for srv in _start(name, tmp_path, emulator):
        message = websocket_whoami(f"ws://127.0.0.1:{srv.port}/ws", "127.0.0.5")
        assert message["client"] == ["2001:db8::5", 40000]
        assert message["source"] == "toa"
        assert lookups(srv, "127.0.0.5") == 1  # the upgrade took over the HTTP protocol's answer


@pytest.mark.parametrize("name", ["uvicorn-httptools", "gunicorn-gthread", "django-gunicorn", "werkzeug"])
def test_host_without_module_is_asked_once_and_logged_once(name: str, tmp_path: Path, emulator: Path) -> None:
    for srv in _start(name, tmp_path, emulator, module=False):
        for _ in range(5):
            body, port = whoami(srv.url(), "127.0.0.5")
            assert body["client"] == ["127.0.0.5", port]
            assert body["source"] == "peer"
        time.sleep(0.2)
        assert lookups(srv, "127.0.0.5") == 1  # the first connection only: then no system call per request
        assert srv.log().count("no TOA kernel module on this host") == 1


def test_server_without_socket_access_says_so_once(tmp_path: Path, emulator: Path) -> None:
    """waitress does not expose the connection's socket: no TOA, one log line, requests unharmed."""
    log = tmp_path / "lookups.log"
    env = {**toa_emulator.env(RULES, log, library=emulator), "REALIP_TOA_PEERS": TOA_PEERS}
    with serve("waitress", waitress_argv("flask_app:app"), tmp_path, family="v4", env=env, cwd=EXAMPLES) as srv:
        for _ in range(3):
            body, port = whoami(srv.url(), "127.0.0.5")
            assert body["client"] == ["127.0.0.5", port]
        text = srv.wait_for_log("does not expose it")
    assert text.count("TOA lookup needs the connection's socket, and this server (waitress) does not expose it") == 1
    assert toa_emulator.count_lookups(log) == 0
