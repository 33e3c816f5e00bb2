"""``realip serve``: one command for a dual-stack uvicorn with realip's protocols.

The server runs for real (``python -m realip serve``) on loopback: an IPv4
client on ``127.0.0.2`` reaches the ``[::]`` socket as ``::ffff:127.0.0.2`` and
the app must see ``127.0.0.2``; an IPv6 client sees ``::1``. Bad arguments
fail before anything is bound, naming the value and what to write instead.

gunicorn's equivalent, ``gunicorn -k realip.gunicorn.UvicornWorker --bind
'[::]:8000'``, is dual-stack by itself: tests/test_docs.py
(``test_listener_table_is_what_the_servers_do``) runs it and checks that an
IPv4 client is unwrapped.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import pytest

from realip import serve as realip_serve
from realip.__main__ import main

from .support.clients import websocket_whoami, whoami
from .support.servers import listening_socket, serve

APP = "tests.apps.echo:asgi_app"


def realip_serve_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "realip", "serve", APP, *args]


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` any more (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind(("::", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free for IPv4 and IPv6 alike (checked by a dual-stack bind)."""
    with listening_socket("dual") as sock:
        return int(sock.getsockname()[1])


def test_one_dual_stack_socket_serves_ipv4_unwrapped_and_ipv6(tmp_path: Path) -> None:
    with serve("realip-serve", realip_serve_argv("--bind", "[::]:{port}"), tmp_path) as server:
        v4, v4_port = whoami(server.url("127.0.0.1"), "127.0.0.2")
        v6, v6_port = whoami(server.url("::1"), "::1")
        ws = websocket_whoami(f"ws://127.0.0.1:{server.port}/", "127.0.0.2")
        log = server.wait_for_log(f"::1:{v6_port}")
        process, port = server.process, server.port
    assert v4["client"] == ["127.0.0.2", v4_port]
    assert v4["peer"] == ["::ffff:127.0.0.2", v4_port]
    assert v4["source"] == "mapped"
    assert (v6["client"], v6["source"]) == (["::1", v6_port], "peer")
    assert (ws["client"][0], ws["source"]) == ("127.0.0.2", "mapped")
    assert f"realip serve: listening on http://[::]:{port} (IPv4 and IPv6 clients)" in log
    assert f"127.0.0.2:{v4_port} - " in log and "::ffff:127.0.0.2" not in log  # the access log agrees
    # Stopped at the end (SIGTERM): the process is gone and the port is free again.
    assert process.poll() is not None
    assert port_is_free(port)


def test_several_binds_and_workers(tmp_path: Path) -> None:
    argv = realip_serve_argv("--bind", "127.0.0.1:{port}", "--bind", "[::1]:0", "--workers", "2")
    with serve("realip-serve-workers", argv, tmp_path) as server:
        log = server.wait_for_log("listening on http://[::1]:")
        (v6_port,) = re.findall(r"listening on http://\[::1\]:(\d+) \(IPv6 only\)", log)
        v4, _ = whoami(server.url("127.0.0.1"), "127.0.0.3")
        v6, _ = whoami(f"http://[::1]:{v6_port}/", "::1")
        log = server.wait_for_log("Application startup complete.")
        process = server.process
    assert f"listening on http://127.0.0.1:{server.port} (IPv4 only)" in log
    assert (v4["client"][0], v4["source"]) == ("127.0.0.3", "peer")  # an AF_INET socket: nothing to unwrap
    assert (v6["client"][0], v6["source"]) == ("::1", "peer")
    assert len(set(re.findall(r"Started server process \[(\d+)\]", server.log()))) == 2
    assert process.poll() is not None


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--bind", "8000"], ["'8000'", "not only a port", "'[::]:8000'"]),
        (["--bind", "::8000"], ["'::8000'", "needs brackets"]),
        (["--bind", "localhost:8000"], ["'localhost'", "not an IP address", "127.0.0.1:8000"]),
        (["--bind", "0.0.0.0"], ["'0.0.0.0'", "no port", "0.0.0.0:8000"]),
        (["--bind", "[::]"], ["'[::]'", "no port"]),
        (["--bind", "[127.0.0.1]:80"], ["'[127.0.0.1]:80'", "brackets are for IPv6"]),
        (["--bind", "[::]:70000"], ["'70000'", "0 to 65535"]),
        (["--bind", "[::]:0", "--workers", "0"], ["'0'", "--workers 4"]),
        (["--bind", "[::]:0", "--log-level", "loud"], ["'loud'", "'info'"]),
        ([], ["--bind"]),
    ],
)
def test_bad_arguments_name_the_value_and_what_to_write(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", APP, *argv]) == 2
    err = capsys.readouterr().err
    assert "realip serve: error:" in err
    for needle in needles:
        assert needle in err, err


def test_an_app_that_is_not_module_colon_attribute(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "app", "--bind", "[::]:0"]) == 2
    assert "'app': write MODULE:ATTRIBUTE, e.g. app:app" in capsys.readouterr().err


def test_accepted_binds() -> None:
    for text, family, dual in [
        ("0.0.0.0:8000", socket.AF_INET, False),
        ("127.0.0.1:0", socket.AF_INET, False),
        ("[::]:8000", socket.AF_INET6, True),
        ("[::1]:0", socket.AF_INET6, False),
        ("[::ffff:127.0.0.1]:80", socket.AF_INET6, False),
    ]:
        bind = realip_serve.parse_bind(text)
        assert (bind.family, bind.dual_stack, bind.text) == (family, dual, text)


@pytest.mark.parametrize("order", ["dual-first", "ipv4-first"])
def test_ipv4_bind_on_the_port_of_a_dual_stack_one_is_explained(order: str, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    binds = [f"[::]:{port}", f"0.0.0.0:{port}"]
    if order == "ipv4-first":
        binds.reverse()
    assert realip_serve.serve(APP, binds) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on {binds[1]}: Address already in use" in err
    assert f"'[::]:{port}' takes IPv4 and IPv6 clients on every address: leave out 0.0.0.0:{port}" in err
    assert port_is_free(port)  # the first socket was closed


def test_bad_realip_variable_fails_before_binding(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REALIP_TOA_PEERS", "load-balancer.example")
    assert realip_serve.serve(APP, ["[::]:0"]) == 1
    assert "REALIP_TOA_PEERS" in capsys.readouterr().err


def test_without_uvicorn_it_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # any import of it raises ImportError
    assert realip_serve.serve(APP, ["[::]:0"]) == 1
    assert "pip install 'realip[uvicorn]'" in capsys.readouterr().err
