"""Every TOA interface on real servers, with the emulated modules (docs/vendors/index.md).

Each server process preloads ``tests/toa_emulator`` as one of the modules seen in
the field: one with the 4096 lookup (Huawei's IPv6 build, dpvs), one that only
rewrites ``getpeername()`` (UCloud, Huawei ``master``) and Alibaba's ``vtoa``
(V6VTOA, the virtual server). Loopback source addresses play the load
balancers; the module's presence comes from a fake ``/sys/module``
(``TOA_EMU_SYS_MODULE``), and the kernel's own TCP table is the real one, which
keeps showing the loopback peer, exactly as the modules leave it.

Every rewritten client here is inside ``REALIP_TRUSTED_PROXIES`` and sends
``X-Forwarded-For: 6.6.6.6``: a rewritten peer must never be trusted as a proxy.
(While a module that rewrites peers is loaded, realip asks about every peer.)
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import realip.toa
from realip.connection import ConnectionResolver

from . import toa_emulator
from .support.clients import client, local_port, whoami
from .support.servers import Server, gunicorn_argv, serve, uvicorn_argv, werkzeug_argv

ASGI = "tests.toa_emulator.vendor_app:asgi_app"
WSGI = "tests.toa_emulator.vendor_app:wsgi_app"
FORGED = "6.6.6.6"

SERVERS = {
    "uvicorn-h11": uvicorn_argv(ASGI, realip="H11Protocol"),
    "uvicorn-httptools": uvicorn_argv(ASGI, realip="HttpToolsProtocol"),
    # --threads 1: gunicorn turns a sync worker with more threads into gthread.
    "gunicorn-sync": gunicorn_argv(WSGI, worker="sync", extra=["--threads", "1"]),
    "gunicorn-gthread": gunicorn_argv(WSGI, worker="gthread"),
    "werkzeug": werkzeug_argv(WSGI),
}
#: Servers that keep a connection open for several requests.
KEEPALIVE = ("uvicorn-h11", "uvicorn-httptools", "gunicorn-gthread")

#: The trusted "load balancers": 127.0.0.1 to 127.0.0.7. 127.0.0.9 is not one.
TOA_PEERS = "127.0.0.0/29"
#: Every client a module writes into getpeername() below, named a trusted proxy on purpose.
TRUSTED = "203.0.113.0/24,2001:db8::/32"

#: Per module, what each "load balancer" carries (``tests/toa_emulator``'s rules).
RULES = {
    "present": {  # the 4096 lookup: Huawei's IPv6 build, dpvs
        "127.0.0.5": "nat64:[2001:db8::5]:40005",
        "127.0.0.7": "v4toa:[203.0.113.7]:4007",
        "127.0.0.9": "v4toa:[203.0.113.9]:4009",
        "127.0.0.3": "none",
    },
    "rewriting": {  # getpeername() only: UCloud (200/8 and 254/8), Huawei master
        "127.0.0.7": "toa200:[203.0.113.7]:4007",
        "127.0.0.9": "v4toa:[203.0.113.9]:4009",
        "127.0.0.5": "nat64:[2001:db8::5]:40005",  # not parsed by this module
        "127.0.0.3": "none",
    },
    "vtoa": {  # Alibaba
        "127.0.0.6": "v6vtoa:[2001:db8::6]:4006+vs:7:[2001:db8:ff::1]:0",
        "127.0.0.7": "v4toa:[203.0.113.7]:4007+vs:1234:[192.0.2.10]:80",
        "127.0.0.4": "none+vs:99:[192.0.2.99]:443",  # 250/8 alone: a VIP, the peer untouched
        "127.0.0.9": "v4toa:[203.0.113.9]:4009",
        "127.0.0.3": "none",
    },
}
#: The directory each emulated module has under /sys/module.
SYS_MODULE = {"present": "toa", "rewriting": "toa", "vtoa": "vtoa", "absent": None}


@dataclass(frozen=True)
class Seen:
    """What the app should see for one load balancer."""

    client: tuple[str, int] | None  # None: the load balancer itself, with its own port
    source: str
    interface: str | None
    hops: tuple[str, ...] = ()
    virtual_server: tuple[int, str, int] | None = None

    @property
    def rewritten(self) -> bool:
        return self.interface in ("rewritten-peer", "v6vtoa")


REWRITTEN = "rewritten-peer"


def expected(module: str, family: str, source: str) -> Seen:
    """The vendor table of docs/vendors/index.md, for the rules above."""
    peer = Seen(None, "peer" if family == "v4" else "mapped", None)  # the peer as it connected
    if source == "127.0.0.3":
        return peer
    if source == "127.0.0.9":  # rewritten from a peer that is no trusted load balancer: no hop
        return Seen(("203.0.113.9", 4009), "toa", REWRITTEN)
    if module == "present":
        if source == "127.0.0.5":
            interface = "lookup" if family == "v4" else REWRITTEN
            return Seen(("2001:db8::5", 40005), "toa", interface, (source,))
        return Seen(("203.0.113.7", 4007), "toa", REWRITTEN, (source,))
    if module == "rewriting":
        if source == "127.0.0.5":
            return peer
        return Seen(("203.0.113.7", 4007), "toa", REWRITTEN, (source,))
    if source == "127.0.0.6":  # V6VTOA: on AF_INET the 28-byte peer, read whole
        interface = "v6vtoa" if family == "v4" else REWRITTEN
        return Seen(("2001:db8::6", 4006), "toa", interface, (source,), (7, "2001:db8:ff::1", 0))
    if source == "127.0.0.4":
        return Seen(None, peer.source, None, (), (99, "192.0.2.99", 443))
    return Seen(("203.0.113.7", 4007), "toa", REWRITTEN, (source,), (1234, "192.0.2.10", 80))


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toa_emulator.build(tmp_path_factory.mktemp("toa-emulator"))


@contextlib.contextmanager
def start(
    name: str,
    module: str,
    family: str,
    tmp: Path,
    library: Path,
    *,
    trusted: str = TRUSTED,
    metadata: bool = True,
) -> Iterator[Server]:
    tmp.mkdir(parents=True, exist_ok=True)
    sys_module = tmp / "sys-module"
    sys_module.mkdir(exist_ok=True)
    loaded = SYS_MODULE[module]
    if loaded is not None:
        (sys_module / loaded).mkdir(exist_ok=True)
    log = tmp / "calls.log"
    env = {
        **toa_emulator.env(RULES.get(module, {}), log, library=library, module=module),
        "TOA_EMU_SYS_MODULE": str(sys_module),
        "REALIP_TOA_VTOA_METADATA": "on" if metadata else "off",
        "REALIP_TOA_PEERS": TOA_PEERS,
        "REALIP_TRUSTED_PROXIES": trusted,
    }
    with serve(name, SERVERS[name], tmp, family=family, env=env) as server:
        server.extra["log"] = log
        yield server


def calls(server: Server, call: str, peer: str | None = None) -> int:
    log: Path = server.extra["log"]  # type: ignore[assignment]
    return sum(1 for e in toa_emulator.read_log(log) if e.call == call and (peer is None or e.peer == peer))


def ask(server: Server, seen: Seen, source: str) -> tuple[dict[str, Any], int]:
    """One request from ``source``. It sends ``X-Forwarded-For``, except where the lookup
    found a NAT64 client: a trusted load balancer vouches for that one, and it is in
    ``TRUSTED`` (as the same client, rewritten on an AF_INET6 listener, must be)."""
    headers = {"X-Forwarded-For": FORGED} if seen.interface != "lookup" else {}
    return whoami(server.url(), source, headers=headers)


def check(body: dict[str, Any], seen: Seen, source: str, port: int) -> None:
    """The app's view of one request from ``source`` (client port ``port``)."""
    assert body["client"] == list(seen.client or (source, port)), body
    assert body["source"] == seen.source, body
    assert body["hops"] == list(seen.hops), body
    toa = body["toa"]
    assert toa is not None, body  # the module was asked, and its answer is kept
    assert toa["interface"] == seen.interface, body
    assert toa["rewritten"] is seen.rewritten, body
    if seen.interface is not None:
        # Who really connected: for a rewritten peer, read from the kernel's own table.
        assert toa["balancer"] == [source, port], body
    assert toa["virtual_server"] == (list(seen.virtual_server) if seen.virtual_server else None), body
    if seen.rewritten:
        assert FORGED not in body["client"], body  # a rewritten peer is never a trusted proxy
        assert "x-forwarded-for" not in body["headers"], body  # and what it sent is stripped


# Every server on the vtoa module behind an AF_INET listener (V6VTOA: the hardest case);
# the keep-alive servers under every module and listener family.
SCENARIOS = sorted(
    {(name, "vtoa", "v4") for name in SERVERS}
    | {("gunicorn-sync", "present", "dual"), ("werkzeug", "rewriting", "dual"), ("uvicorn-h11", "rewriting", "v4")}
    | {(name, module, family) for name in ("uvicorn-httptools", "gunicorn-gthread")
       for module in RULES for family in ("v4", "dual")}
)  # fmt: skip


#: gunicorn sync and Werkzeug close the connection after each response.
KEEPALIVE_SCENARIOS = [s for s in SCENARIOS if s[0] in KEEPALIVE]


@pytest.fixture(scope="module", params=SCENARIOS, ids=["-".join(s) for s in SCENARIOS])
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: Path
) -> Iterator[tuple[Server, str, str]]:
    name, module, family = request.param
    with start(name, module, family, tmp_path_factory.mktemp("-".join(request.param)), emulator) as server:
        yield server, module, family


def test_each_interface_gives_the_client_and_its_provenance(scenario: tuple[Server, str, str]) -> None:
    server, module, family = scenario
    for source in RULES[module]:
        seen = expected(module, family, source)
        body, port = ask(server, seen, source)
        check(body, seen, source, port)


@pytest.mark.parametrize("scenario", KEEPALIVE_SCENARIOS, ids=["-".join(s) for s in KEEPALIVE_SCENARIOS],
                         indirect=True)  # fmt: skip
def test_keepalive_connection_costs_at_most_one_call_of_each_kind(scenario: tuple[Server, str, str]) -> None:
    server, module, family = scenario
    source = {"present": "127.0.0.7", "rewriting": "127.0.0.7", "vtoa": "127.0.0.6"}[module]
    before = {call: calls(server, call) for call in ("4096", "1345", "1347", "diag")}
    for connection in range(2):
        with client(source) as c:
            ports = set()
            for _ in range(10):
                with c.stream("GET", server.url()) as response:
                    ports.add(local_port(response))
                    response.read()
                check(response.json(), expected(module, family, source), source, next(iter(ports)))
            assert len(ports) == 1
        made = connection + 1
        assert calls(server, "4096") - before["4096"] == made
        # The kernel's table: at most one dump per connection (the last one is kept).
        assert calls(server, "diag") - before["diag"] <= made
        if module == "vtoa":
            assert calls(server, "1345") - before["1345"] == made
            assert calls(server, "1347") - before["1347"] == made  # 1345 had no IPv4 VIP for 249
        else:
            assert calls(server, "1345") == calls(server, "1347") == 0  # only with vtoa loaded


@pytest.mark.parametrize("name", ["uvicorn-httptools", "gunicorn-gthread", "werkzeug"])
def test_no_module_costs_no_call_per_request(name: str, tmp_path: Path, emulator: Path) -> None:
    with start(name, "absent", "v4", tmp_path, emulator) as server:
        # serve() waited for the server with a request from 127.0.0.1, a trusted peer: that
        # connection was asked, was told ENOPROTOOPT, and no connection is asked for a minute.
        for _ in range(4):
            body, port = whoami(server.url(), "127.0.0.5", headers={"X-Forwarded-For": FORGED})
            assert body["client"] == ["127.0.0.5", port]
            assert body["source"] == "peer" and body["toa"] is None  # not asked
        time.sleep(0.2)
        log: Path = server.extra["log"]  # type: ignore[assignment]
        assert [(e.call, e.peer, e.result) for e in toa_emulator.read_log(log)] == [
            ("4096", "127.0.0.1", errno.ENOPROTOOPT)
        ]  # one lookup, and no table read, no vtoa call


def test_the_answer_of_a_host_without_module_is_kept() -> None:
    """In-process, on this kernel: ``Resolution.toa`` carries the module's answer whenever
    it was asked, ENOPROTOOPT too; then nothing is asked for a minute."""
    if not realip.toa.available() or realip.toa.loaded_modules():
        pytest.skip("needs the compiled shim and a host without a TOA module")
    resolver = ConnectionResolver(toa=True, toa_peers="127.0.0.0/8")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()):
            accepted, peer = listener.accept()
            with accepted:
                first = resolver.resolve(accepted, peer)
                second = resolver.resolve(accepted, peer)
    assert first.toa == realip.toa.TOAAnswer(realip.toa.TOAStatus.NO_MODULE, errno=errno.ENOPROTOOPT)
    assert first.source == second.source == "peer" and first.client == second.client
    assert second.toa is None


def send_and_reset(source: str, port: int, request: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(request)


@pytest.mark.parametrize("name", ["uvicorn-httptools", "gunicorn-gthread"])
def test_reset_connection_behind_a_rewriting_module_is_never_a_trusted_proxy(
    name: str, tmp_path: Path, emulator: Path
) -> None:
    """A module that answers no lookup gives no ENOTCONN either: realip must notice the reset
    itself. The rewritten address (a trusted proxy's) must not turn into a peer seen on the wire."""
    request = f"GET / HTTP/1.1\r\nHost: backend\r\nX-Forwarded-For: {FORGED}\r\n\r\n".encode()
    with start(name, "rewriting", "v4", tmp_path, emulator) as server:
        for _ in range(150):
            with contextlib.suppress(OSError):
                send_and_reset("127.0.0.7", server.port, request)
        body, port = whoami(server.url(), "127.0.0.7")
        check(body, expected("rewriting", "v4", "127.0.0.7"), "127.0.0.7", port)
        time.sleep(0.5)
        assert FORGED not in server.log()


@pytest.mark.parametrize(("name", "module", "family"), [("uvicorn-httptools", "vtoa", "v4"),
                                                        ("gunicorn-sync", "rewriting", "dual")])  # fmt: skip
def test_every_peer_is_asked_while_a_module_is_loaded(name: str, module: str, family: str, tmp_path: Path,
                                                      emulator: Path) -> None:  # fmt: skip
    """No trusted proxies at all: the rewritten clients still get their provenance (and the
    V6VTOA client its real address), because any peer may have been written by the module."""
    with start(name, module, family, tmp_path, emulator, trusted="") as server:
        for source in RULES[module]:
            seen = expected(module, family, source)
            body, port = ask(server, seen, source)
            check(body, seen, source, port)
            assert "x-forwarded-for" not in body["headers"]


def test_each_call_of_the_shim_uses_the_structure_size_the_module_expects() -> None:
    if not realip.toa.available():
        pytest.skip("the TOA shim is not compiled")
    lib = realip.toa._shim.lib
    assert {optname: lib.realip_option_struct_size(optname) for optname in (4096, 1345, 1346, 1347, 1)} == {
        4096: 20,  # struct toa_nat64_peer: 18 bytes of data, 2 of padding
        1345: 12,  # struct vtoa_get_vs
        1346: 32,  # struct vtoa_get_vs4rds and one struct vtoa_vs
        1347: 24,  # struct v6vtoa_get_vs
        1: 0,
    }
    assert lib.realip_sockaddr_size() >= 28  # a sockaddr_in6 whatever the socket's family
    assert lib.realip_toa_struct_size() == 20


def test_the_kernel_table_names_who_connected() -> None:
    """In-process, without a module: the table's peer is getpeername()'s, on both families,
    from the sock_diag dump, from the dump kept for the next connection, and from /proc."""
    if not realip.toa.available():
        pytest.skip("the TOA shim is not compiled")
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_STREAM) as listener:
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind((host, 0))
            listener.listen(8)
            port = listener.getsockname()[1]
            first = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
            second = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0))
            with first, second:
                accepted = [listener.accept()[0], listener.accept()[0]]
                try:
                    realip.toa._TABLE.last = None
                    assert realip.toa.kernel_peer(accepted[0]) == first.getsockname()  # a dump
                    kept = realip.toa._TABLE.last
                    assert realip.toa.kernel_peer(accepted[1]) == second.getsockname()  # in the same dump
                    assert realip.toa._TABLE.last is kept
                    realip.toa._TABLE.netlink = False  # where netlink is refused: /proc/net/tcp
                    try:
                        assert realip.toa.kernel_peer(accepted[1]) == second.getsockname()
                    finally:
                        realip.toa._TABLE.netlink = True
                    assert realip.toa.socket_family(accepted[0]) == family
                    assert realip.toa.peer_name(accepted[0].fileno()) == first.getsockname()
                    assert realip.toa.virtual_server(accepted[0]) is None  # no vtoa here: ENOPROTOOPT
                finally:
                    for sock in accepted:
                        sock.close()
        with pytest.raises(OSError) as raised:
            realip.toa.kernel_peer(accepted[0])
        assert raised.value.errno == errno.EBADF


def test_loaded_modules_are_read_from_sys_module(tmp_path: Path) -> None:
    assert realip.toa.loaded_modules(str(tmp_path)) == ()
    for name in ("vtoa", "toa", "nf_nat", "tgw_toa"):
        (tmp_path / name).mkdir()
    assert realip.toa.loaded_modules(str(tmp_path)) == ("toa", "vtoa", "tgw_toa")
