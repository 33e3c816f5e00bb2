"""The live hint for a container runtime's NAT gateway, with the addresses a real bridge setup produces.

A network namespace plays the container: a veth pair stands in for Docker's
bridge, the host side (``172.31.250.1``) is the namespace's default gateway,
and a client on the host reaches the app through it, so the app's peer is its
own gateway, as behind Docker's NAT or ``docker-proxy``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from realip.hints import default_gateway

from .support.programs import require_program
from .support.servers import ROOT, stop

NS = f"realip-gw-{os.getpid()}"
HOST_SIDE, APP_SIDE = "172.31.250.1", "172.31.250.2"


def test_default_gateway_is_read_from_the_routing_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert default_gateway(table) == "192.168.0.1"
    table.write_text("Iface\tDestination\tGateway \tFlags\n")
    assert default_gateway(table) is None
    assert default_gateway(tmp_path / "missing") is None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def container() -> Iterator[str]:
    """A namespace whose default gateway is the host side of a veth pair."""
    require_program("ip")
    veth = f"rgw{os.getpid() % 100000}"
    try:
        _ip("netns", "add", NS)
    except subprocess.CalledProcessError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode(errors='replace').strip()}")
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}c")
        _ip("link", "set", f"{veth}c", "netns", NS)
        _ip("addr", "add", f"{HOST_SIDE}/24", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", NS, "addr", "add", f"{APP_SIDE}/24", "dev", f"{veth}c")
        _ip("-n", NS, "link", "set", f"{veth}c", "up")
        _ip("-n", NS, "link", "set", "lo", "up")
        _ip("-n", NS, "route", "add", "default", "via", HOST_SIDE)
        yield NS
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=10)


def test_a_peer_that_is_the_hosts_gateway_is_named_once(container: str, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    argv = ["ip", "netns", "exec", container, sys.executable, "-m", "uvicorn", "tests.apps.echo:asgi_app",
            "--host", APP_SIDE, "--port", "8765", "--no-proxy-headers"]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        transport = httpx.HTTPTransport(local_address=HOST_SIDE)
        with httpx.Client(transport=transport, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    bodies = [client.get(f"http://{APP_SIDE}:8765/").json() for _ in range(3)]
                    break
                except httpx.HTTPError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        time.sleep(0.3)
    finally:
        stop(process)
    text = log.read_text(errors="replace")
    assert all(body["client"][0] == HOST_SIDE for body in bodies)  # the gateway: the client is lost
    assert text.count(f"a client connected from {HOST_SIDE}, this host's default gateway") == 1
