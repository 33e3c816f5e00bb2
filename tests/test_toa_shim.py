"""The TOA shim and :mod:`realip.toa` against real sockets and the emulated module.

``LD_PRELOAD`` only takes effect at process start, so each test runs ``PROBE``
(below) in a fresh interpreter with the emulator preloaded: it opens a listener
on loopback, connects clients from chosen loopback source addresses, calls
:func:`realip.toa.lookup` on the accepted sockets and prints JSON.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cffi
import pytest

from realip import toa

from . import toa_emulator

TESTS = Path(__file__).resolve().parent
SHIM_DIR = TESTS.parent / "realip" / "_toa"

Probe = Callable[..., dict[str, Any]]

PROBE = r"""
import contextlib, json, os, socket, sys, threading

spec = json.loads(sys.argv[1])
if spec.get("block_shim"):
    sys.modules["realip._toa._toa_lib"] = None  # any import of it raises ImportError
import realip.toa as toa


def answer(a):
    return {"status": a.status.value, "address": None if a.address is None else str(a.address),
            "version": None if a.address is None else a.address.version,
            "port": a.port, "errno": a.errno, "rewritten": a.rewritten_by_kernel}


def raw(sock, size):
    try:
        return {"hex": sock.getsockopt(socket.IPPROTO_IP, 4096, size).hex()}
    except OSError as exc:
        return {"errno": exc.errno}


def listener(family):
    if family == "inet":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
    else:  # dual-stack AF_INET6, bound to loopback only through the mapped address
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::ffff:127.0.0.1", 0))
    sock.listen(64)
    return sock


def connect(stack, lsock, source):
    client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    client.bind((source, 0))
    client.connect(("127.0.0.1", lsock.getsockname()[1]))
    conn, accepted_from = lsock.accept()
    stack.enter_context(conn)
    return client, conn, accepted_from


shim = sys.modules.get("realip._toa._toa_lib")
out = {"pid": os.getpid(), "available": toa.available(), "calls": 0, "connections": [],
       "struct_size": shim.lib.realip_toa_struct_size() if shim else None}

with contextlib.ExitStack() as stack:
    lsock = stack.enter_context(listener(spec.get("listener", "inet")))
    for source in spec.get("clients", []):
        client, conn, accepted_from = connect(stack, lsock, source)
        record = {"source": source, "client": list(client.getsockname()),
                  "accepted_from": list(accepted_from[:2]), "peername": list(conn.getpeername()[:2]),
                  "answers": [], "raw": {}}
        for i in range(spec.get("lookups", 1)):  # alternately the socket and its bare fd
            record["answers"].append(answer(toa.lookup(conn if i % 2 == 0 else conn.fileno())))
            out["calls"] += 1
        for size in spec.get("raw_sizes", []):
            record["raw"][str(size)] = raw(conn, size)
            out["calls"] += 1
        record["so_type"] = conn.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        conn.sendall(b"x")
        record["still_open"] = client.recv(1) == b"x"
        out["connections"].append(record)

    if spec.get("listener_lookup"):
        out["listener_answer"] = answer(toa.lookup(lsock))
        out["calls"] += 1

    if spec.get("threads"):
        conns = [connect(stack, lsock, spec["thread_client"])[1] for _ in range(spec["threads"])]
        statuses = [[] for _ in conns]
        barrier = threading.Barrier(len(conns))

        def work(i):
            barrier.wait()
            for _ in range(spec["per_thread"]):
                statuses[i].append(toa.lookup(conns[i]).status.value)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(len(conns))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        out["thread_statuses"] = statuses
        out["calls"] += sum(map(len, statuses))

    if spec.get("odd_arguments"):
        unconnected = stack.enter_context(socket.socket())
        out["unconnected"] = answer(toa.lookup(unconnected))
        closed = socket.socket()
        closed.close()
        out["closed"] = answer(toa.lookup(closed))
        r, w = os.pipe()
        try:
            out["pipe"] = answer(toa.lookup(r))
        finally:
            os.close(r)
            os.close(w)
        out["huge_fd"] = answer(toa.lookup(2**40))

print(json.dumps(out))
"""


def _realip_parent() -> Path:
    """Where the probe imports realip from: the same copy the test run sees
    (an editable checkout or an installed package), else this checkout."""
    spec = importlib.util.find_spec("realip")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).resolve().parents[1]
    return TESTS.parent


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toa_emulator.build(tmp_path_factory.mktemp("toa_emulator"))


@pytest.fixture(scope="session")
def run_probe(emulator: Path, tmp_path_factory: pytest.TempPathFactory) -> Probe:
    """``run_probe(spec, rules, log=None, module=True, preload=True, script=PROBE) -> dict``."""
    # ``python -c`` puts the working directory first on sys.path: run from an
    # empty one, so that PYTHONPATH alone decides which realip is imported.
    cwd = tmp_path_factory.mktemp("probe-cwd")

    def run(
        spec: dict[str, Any],
        rules: dict[str, str] | str = "",
        *,
        log: Path | None = None,
        module: bool | str = True,
        preload: bool = True,
        script: str = PROBE,
    ) -> dict[str, Any]:
        environment = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("TOA_EMU")}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(_realip_parent()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        if preload:
            environment.update(toa_emulator.env(rules, log, library=emulator, module=module))
        proc = subprocess.run(
            [sys.executable, "-c", script, json.dumps(spec)],
            env=environment,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"probe failed ({proc.returncode}):\n{proc.stderr}"
        result: dict[str, Any] = json.loads(proc.stdout)
        if not spec.get("block_shim"):
            assert result["available"], (
                "the TOA shim is not built: run `python realip/_toa/build.py` or `pip install -e .`"
            )
        return result

    return run


def found(address: str, port: int, version: int) -> dict[str, Any]:
    return {"status": "found", "address": address, "version": version, "port": port, "errno": 0, "rewritten": False}


def failed(status: str, err: int) -> dict[str, Any]:
    return {
        "status": status,
        "address": None,
        "version": None,
        "port": None,
        "errno": err,
        "rewritten": err == errno.EFAULT,
    }


# --- the C boundary --------------------------------------------------------


def test_compiled_struct_is_20_bytes(run_probe: Probe) -> None:
    out = run_probe({})
    assert out["struct_size"] == 20
    assert out["available"] is True


@pytest.mark.parametrize("stub", [False, True], ids=["linux", "stub"])
def test_shim_compiles_warning_free_and_stub_is_unavailable(tmp_path: Path, stub: bool) -> None:
    library = tmp_path / "shim.so"
    command = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{SHIM_DIR}"]
    command += ["-DREALIP_TOA_STUB=1"] if stub else []
    command += ["-o", str(library), str(SHIM_DIR / "toa_shim.c")]
    subprocess.run(command, check=True, capture_output=True, timeout=120)

    ffi = cffi.FFI()
    ffi.cdef((SHIM_DIR / "toa_shim.h").read_text(encoding="utf-8"))  # the header is the cdef
    lib: Any = ffi.dlopen(str(library))
    assert lib.realip_toa_struct_size() == 20
    assert lib.realip_toa_available() == (0 if stub else 1)
    # Each getsockopt call's structure, as compiled (the C asserts them too): the same in the stub.
    sizes = {optname: lib.realip_option_struct_size(optname) for optname in (4096, 1345, 1346, 1347, 1348)}
    assert sizes == {4096: 20, 1345: 12, 1346: 32, 1347: 24, 1348: 0}
    assert lib.realip_sockaddr_size() == 128
    if stub:
        addr, port = ffi.new("unsigned char[16]"), ffi.new("unsigned int *")
        assert lib.realip_toa_lookup(0, addr, port) == errno.ENOSYS
        buf, length = ffi.new("unsigned char[128]"), ffi.new("unsigned int *", 128)
        assert lib.realip_socket_name(0, 1, buf, length) == errno.ENOSYS
        assert lib.realip_socket_domain(0, ffi.new("int *")) == errno.ENOSYS
        assert lib.realip_socket_cookie(0, ffi.new("unsigned long long *")) == errno.ENOSYS
        family = ffi.new("int *")
        assert lib.realip_vtoa_virtual_server(0, 1345, port, addr, family, port) == errno.ENOSYS


@pytest.mark.skipif(Path("/sys/module/toa").exists(), reason="this host has a real TOA module loaded")
def test_real_kernel_without_module_is_no_module(run_probe: Probe) -> None:
    out = run_probe({"clients": ["127.0.0.5"], "listener_lookup": True}, preload=False)
    assert out["connections"][0]["answers"] == [failed("no-module", errno.ENOPROTOOPT)]
    assert out["listener_answer"] == failed("no-module", errno.ENOPROTOOPT)


def test_without_the_compiled_shim_every_answer_is_unavailable(run_probe: Probe) -> None:
    out = run_probe({"block_shim": True, "clients": ["127.0.0.5"], "odd_arguments": True})
    assert out["available"] is False
    assert out["connections"][0]["answers"] == [failed("unavailable", errno.ENOSYS)]
    assert out["unconnected"] == failed("unavailable", errno.ENOSYS)


def test_lookup_rejects_what_is_not_a_socket() -> None:
    with pytest.raises(TypeError, match="file descriptor or a socket"):
        toa.lookup("3")  # type: ignore[arg-type]


def test_rewritten_by_kernel_means_efault() -> None:
    assert toa.TOAAnswer(toa.TOAStatus.NONE, errno=errno.EFAULT).rewritten_by_kernel
    assert not toa.TOAAnswer(toa.TOAStatus.NONE, errno=errno.EINVAL).rewritten_by_kernel


# --- the rows of docs/toa-module.md-----------------------------------------------


def test_nat64_option_on_inet_listener_is_found(run_probe: Probe) -> None:
    out = run_probe({"clients": ["127.0.0.5"], "lookups": 2}, {"127.0.0.5": "nat64:[2001:db8::5]:40000"})
    conn = out["connections"][0]
    assert conn["answers"] == [found("2001:db8::5", 40000, 6)] * 2  # via the socket, then the bare fd
    # The module leaves an AF_INET peer name alone: it still shows the sender.
    assert conn["peername"] == conn["client"] == conn["accepted_from"]


def test_ipv4_mapped_nat64_answer_is_unwrapped_to_ipv4(run_probe: Probe) -> None:
    out = run_probe({"clients": ["127.0.0.6"]}, {"127.0.0.6": "nat64:[::ffff:198.51.100.7]:40001"})
    assert out["connections"][0]["answers"] == [found("198.51.100.7", 40001, 4)]


@pytest.mark.parametrize("rules", [{}, {"127.0.0.5": "none"}, {"*": "none"}], ids=["default", "explicit", "star"])
def test_connection_without_option_is_none(run_probe: Probe, rules: dict[str, str]) -> None:
    out = run_probe({"clients": ["127.0.0.5"]}, rules)
    conn = out["connections"][0]
    assert conn["answers"] == [failed("none", errno.EINVAL)]
    assert conn["answers"][0]["rewritten"] is False
    assert conn["peername"] == conn["client"]


def test_nat64_option_on_inet6_listener_rewrites_peer_name(run_probe: Probe) -> None:
    # The rule key is the dotted IPv4 form of the mapped peer ::ffff:127.0.0.6.
    out = run_probe({"listener": "inet6", "clients": ["127.0.0.6"]}, {"127.0.0.6": "nat64:[2001:db8::6]:40006"})
    conn = out["connections"][0]
    assert conn["peername"] == ["2001:db8::6", 40006]
    assert conn["accepted_from"] == ["2001:db8::6", 40006]
    assert conn["answers"] == [failed("none", errno.EFAULT)]
    assert conn["answers"][0]["rewritten"] is True


def test_ipv4_toa_option_rewrites_peer_name(run_probe: Probe) -> None:
    out = run_probe({"clients": ["127.0.0.7"]}, {"127.0.0.7": "v4toa:[203.0.113.8]:4000"})
    conn = out["connections"][0]
    assert conn["peername"] == conn["accepted_from"] == ["203.0.113.8", 4000]
    assert conn["answers"] == [failed("none", errno.EFAULT)]


def test_rules_pick_the_connection_by_real_client_address(run_probe: Probe) -> None:
    rules = {"127.0.0.5": "nat64:[2001:db8::5]:40000", "*": "nat64:[2001:db8::ff]:1"}
    out = run_probe({"clients": ["127.0.0.5", "127.0.0.9"]}, rules)
    assert [c["answers"][0]["address"] for c in out["connections"]] == ["2001:db8::5", "2001:db8::ff"]


@pytest.mark.parametrize(
    ("rules", "module"),
    [({"*": "nomodule"}, True), ({"127.0.0.5": "v4toa:[203.0.113.8]:4000"}, False)],
    ids=["star-nomodule", "module-absent"],
)
def test_host_without_module_is_no_module(run_probe: Probe, rules: dict[str, str], module: bool) -> None:
    out = run_probe({"clients": ["127.0.0.5"], "listener_lookup": True}, rules, module=module)
    conn = out["connections"][0]
    assert conn["answers"] == [failed("no-module", errno.ENOPROTOOPT)]
    assert out["listener_answer"] == failed("no-module", errno.ENOPROTOOPT)  # on every socket
    assert conn["peername"] == conn["client"]  # rules mean nothing without the module


def test_listening_and_unconnected_sockets_are_enotconn_errors(run_probe: Probe) -> None:
    out = run_probe({"listener_lookup": True, "odd_arguments": True}, {"*": "nat64:[2001:db8::5]:40000"})
    assert out["listener_answer"] == failed("error", errno.ENOTCONN)
    assert out["unconnected"] == failed("error", errno.ENOTCONN)


@pytest.mark.parametrize("err", [errno.EIO, errno.EBADF, errno.ENOSYS, errno.EPERM])
def test_unexpected_errno_is_reported_not_raised(run_probe: Probe, err: int) -> None:
    out = run_probe({"clients": ["127.0.0.5"]}, {"127.0.0.5": f"errno:{err}"})
    # ENOSYS from a real shim is an error like any other, not "unavailable".
    assert out["connections"][0]["answers"] == [failed("error", err)]


def test_answer_shorter_than_the_struct_is_eproto_error(run_probe: Probe) -> None:
    out = run_probe({"clients": ["127.0.0.5"]}, {"127.0.0.5": "badlen:18"})
    assert out["connections"][0]["answers"] == [failed("error", errno.EPROTO)]


def test_closed_socket_pipe_and_impossible_fd_are_errors(run_probe: Probe) -> None:
    out = run_probe({"odd_arguments": True}, {"*": "nat64:[2001:db8::5]:40000"})
    assert out["closed"] == failed("error", errno.EBADF)
    assert out["pipe"] == failed("error", errno.ENOTSOCK)  # the kernel's answer, not the module's
    assert out["huge_fd"] == failed("error", errno.EBADF)


def test_lookup_leaves_the_socket_open_and_usable(run_probe: Probe) -> None:
    out = run_probe({"clients": ["127.0.0.5"], "lookups": 4}, {"127.0.0.5": "nat64:[2001:db8::5]:40000"})
    conn = out["connections"][0]
    assert conn["still_open"] is True
    assert conn["so_type"] == socket.SOCK_STREAM  # other getsockopt calls pass through


# --- the emulator itself -------------------------------------------------------


def test_buffer_shorter_than_20_bytes_is_einval(run_probe: Probe) -> None:
    out = run_probe({"clients": ["127.0.0.5"], "raw_sizes": [18, 19, 20]}, {"127.0.0.5": "nat64:[2001:db8::5]:40000"})
    raw = out["connections"][0]["raw"]
    assert raw["18"] == raw["19"] == {"errno": errno.EINVAL}
    # 16 address bytes, the port (40000 = 0x9c40), both in network order, then 2 bytes of padding.
    assert raw["20"] == {"hex": "20010db8000000000000000000000005" + "9c40" + "abab"}


def test_log_has_one_line_per_lookup(run_probe: Probe, tmp_path: Path) -> None:
    log = tmp_path / "toa.log"
    spec = {"clients": ["127.0.0.5", "127.0.0.6"], "lookups": 3, "raw_sizes": [18, 20], "listener_lookup": True}
    out = run_probe(spec, {"127.0.0.5": "nat64:[2001:db8::5]:40000"}, log=log)
    entries = toa_emulator.read_log(log)
    assert toa_emulator.count_lookups(log) == out["calls"] == 2 * (3 + 2) + 1
    assert {e.pid for e in entries} == {out["pid"]}
    assert [e.peer for e in entries] == ["127.0.0.5"] * 5 + ["127.0.0.6"] * 5 + [None]
    assert [e.result for e in entries] == [0, 0, 0, errno.EINVAL, 0] + [errno.EINVAL] * 5 + [errno.ENOTCONN]


def test_concurrent_lookups_from_threads(run_probe: Probe, tmp_path: Path) -> None:
    log = tmp_path / "toa.log"
    spec = {"threads": 8, "per_thread": 50, "thread_client": "127.0.0.5"}
    out = run_probe(spec, {"127.0.0.5": "nat64:[2001:db8::5]:40000"}, log=log)
    assert out["thread_statuses"] == [["found"] * 50] * 8
    assert toa_emulator.count_lookups(log) == 400  # and every line parsed: no torn writes


@pytest.mark.parametrize(
    "rules",
    ["127.0.0.5=bogus", "127.0.0.5=nomodule", "not-an-ip=none", "*=nat64:2001:db8::5:1", "*=errno:0", "*=none;*=none"],
)
def test_bad_emulator_rule_aborts_loudly(emulator: Path, rules: str) -> None:
    environment = {**os.environ, **toa_emulator.env(rules, library=emulator)}
    code = "import socket; socket.socket().getsockopt(socket.IPPROTO_IP, 4096, 20)"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "toa_emu: " in proc.stderr


# --- the other interfaces: V6VTOA, vtoa's virtual server, rewriting-only modules ------

VENDOR_PROBE = r"""
import contextlib, json, socket, sys
import realip.toa as toa

spec = json.loads(sys.argv[1])
lib, ffi = toa._shim.lib, toa._shim.ffi


def raw(sock, optname, size):
    try:
        return {"hex": sock.getsockopt(socket.IPPROTO_IP, optname, size).hex()}
    except OSError as exc:
        return {"errno": exc.errno}


def shim_vs(sock, optname):
    vid, vip = ffi.new("unsigned int *"), ffi.new("unsigned char[16]")
    family, port = ffi.new("int *"), ffi.new("unsigned int *")
    rc = lib.realip_vtoa_virtual_server(sock.fileno(), optname, vid, vip, family, port)
    if rc:
        return {"errno": rc}
    size = 4 if family[0] == socket.AF_INET else 16
    return {"vid": vid[0], "vip": socket.inet_ntop(family[0], ffi.buffer(vip, size)[:]), "port": port[0]}


def attempt(function, *args):
    try:
        result = function(*args)
    except OSError as exc:
        return {"errno": exc.errno}
    if result is None or isinstance(result, (int, str)):
        return result
    if isinstance(result, tuple):
        return list(result)
    return [result.vpc_id, str(result.address), result.port]


out = {"available": toa.available(), "connections": []}
with contextlib.ExitStack() as stack:
    family = socket.AF_INET if spec.get("listener", "inet") == "inet" else socket.AF_INET6
    lsock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    if family == socket.AF_INET6:
        lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        lsock.bind(("::ffff:127.0.0.1", 0))
    else:
        lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    for source in spec["clients"]:
        client = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        client.bind((source, 0))
        client.connect(("127.0.0.1", lsock.getsockname()[1]))
        conn, accepted_from = lsock.accept()
        stack.enter_context(conn)
        out["connections"].append({
            "client": list(client.getsockname()),
            "accepted_from": list(accepted_from),
            "peername": list(conn.getpeername()),
            "peer_name": attempt(toa.peer_name, conn),
            "family": attempt(toa.socket_family, conn),
            "kernel_peer": attempt(toa.kernel_peer, conn),
            "virtual_server": attempt(toa.virtual_server, conn),
            "lookup": toa.lookup(conn).errno,
            "shim": {str(o): shim_vs(conn, o) for o in (1345, 1346, 1347)},
            "raw": {f"{o}/{n}": raw(conn, o, n) for o, n in spec.get("raw", [])},
        })
    out["listener"] = {str(o): shim_vs(lsock, o) for o in (1345, 1347)}
print(json.dumps(out))
"""

VTOA_RULES = {
    "127.0.0.6": "v6vtoa:[2001:db8::6]:4006+vs:7:[2001:db8:ff::1]:0",
    "127.0.0.7": "v4toa:[203.0.113.7]:4007+vs:1234:[192.0.2.10]:80",
    "127.0.0.8": "toa200:[203.0.113.8]:4008",
}


def test_v6vtoa_peer_on_an_af_inet_socket_is_truncated_by_python_and_read_whole_by_the_shim(
    run_probe: Probe,
) -> None:
    out = run_probe({"clients": ["127.0.0.6"]}, VTOA_RULES, module="vtoa", script=VENDOR_PROBE)
    conn = out["connections"][0]
    # CPython sized accept() and getpeername() for AF_INET (16 bytes); the kernel (and the emulator)
    # wrote the first 16 bytes of a 28-byte sockaddr_in6 and said 28: an AF_INET6 tuple whose
    # port and first 8 address bytes are right and the rest is whatever the buffer held.
    for seen in (conn["accepted_from"], conn["peername"]):
        assert len(seen) == 4 and seen[1] == 4006
        assert socket.inet_pton(socket.AF_INET6, seen[0])[:8] == socket.inet_pton(socket.AF_INET6, "2001:db8::")[:8]
    assert conn["peer_name"] == ["2001:db8::6", 4006]
    assert conn["family"] == socket.AF_INET
    assert conn["kernel_peer"] == conn["client"]  # who really connected
    assert conn["lookup"] == errno.ENOPROTOOPT  # vtoa answers no lookup
    assert conn["virtual_server"] == [7, "2001:db8:ff::1", 0]  # from 1347: vid in host order, port 0
    assert conn["shim"]["1345"] == conn["shim"]["1346"] == {"errno": errno.ESRCH}  # no IPv4 VIP


def test_vtoa_virtual_server_calls_and_their_sizes(run_probe: Probe) -> None:
    raws = [[1345, 11], [1345, 12], [1346, 31], [1346, 32], [1346, 33], [1347, 23], [1347, 24]]
    out = run_probe({"clients": ["127.0.0.7", "127.0.0.8"], "raw": raws}, VTOA_RULES, module="vtoa",
                    script=VENDOR_PROBE)  # fmt: skip
    with_vip, without = out["connections"]
    assert with_vip["peername"] == ["203.0.113.7", 4007]  # 254/8: rewritten
    assert with_vip["virtual_server"] == [1234, "192.0.2.10", 80]
    vs = {"vid": 1234, "vip": "192.0.2.10", "port": 80}
    assert with_vip["shim"] == {"1345": vs, "1346": vs, "1347": {"errno": errno.ESRCH}}
    raw = with_vip["raw"]
    # vid as the option carried it (network order), the VIP, the port, 2 bytes of padding.
    assert raw["1345/12"] == {"hex": "000004d2" + "c000020a" + "0050" + "0000"}
    assert raw["1346/32"]["hex"][40:] == "000004d2" + "c000020a" + "0050" + "0000"  # the entry after 20 bytes
    for short in ("1345/11", "1346/31", "1346/33", "1347/23"):
        assert raw[short] == {"errno": errno.EINVAL}, short
    assert raw["1347/24"] == {"errno": errno.ESRCH}
    # 200/8 is not vtoa's option: the peer is the sender, and there is no virtual server.
    assert without["peername"] == without["client"] and without["virtual_server"] is None
    assert out["listener"] == {"1345": {"errno": errno.ESRCH}, "1347": {"errno": errno.ESRCH}}


@pytest.mark.parametrize(
    ("module", "listener", "rewritten"),
    [("rewriting", "inet", {"127.0.0.7", "127.0.0.8"}), ("rewriting", "inet6", {"127.0.0.7", "127.0.0.8"}),
     ("present", "inet", {"127.0.0.7"}), ("vtoa", "inet6", {"127.0.0.6", "127.0.0.7"})],
)  # fmt: skip
def test_each_module_rewrites_what_the_lab_saw_it_rewrite(
    run_probe: Probe, module: str, listener: str, rewritten: set[str]
) -> None:
    rules = {**VTOA_RULES, "127.0.0.5": "nat64:[2001:db8::5]:40005"}
    clients = ["127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"]
    out = run_probe({"clients": clients, "listener": listener}, rules, module=module, script=VENDOR_PROBE)
    for source, conn in zip(clients, out["connections"], strict=True):
        kernel = conn["kernel_peer"]
        assert kernel == conn["client"], source  # the kernel's table always has the sender
        nat64_there = source == "127.0.0.5" and module != "rewriting" and listener == "inet6"
        assert (conn["peer_name"] != kernel) is (source in rewritten or nat64_there), source
        if module != "present":
            assert conn["lookup"] == errno.ENOPROTOOPT  # on every socket, as with no module
        if module != "vtoa":
            assert conn["shim"]["1345"] == {"errno": errno.ENOPROTOOPT}
    if module == "vtoa":  # NAT64 on AF_INET6 (253/20) and V6VTOA there: the client, plainly
        assert [c["peer_name"] for c in out["connections"][:2]] == [["2001:db8::5", 40005], ["2001:db8::6", 4006]]


def test_emulator_logs_the_virtual_server_calls_and_table_reads(run_probe: Probe, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    run_probe({"clients": ["127.0.0.7"]}, VTOA_RULES, module="vtoa", log=log, script=VENDOR_PROBE)
    calls = [e.call for e in toa_emulator.read_log(log)]
    assert calls.count("diag") == 1  # kernel_peer(): one sock_diag dump
    assert calls.count("4096") == 1
    assert calls.count("1345") == 3  # virtual_server(), the shim, the listener
    assert toa_emulator.count_lookups(log) == 1


def test_emulator_module_must_be_known(emulator: Path) -> None:
    with pytest.raises(ValueError, match="TOA emulator module"):
        toa_emulator.env({}, library=emulator, module="huawei")
    environment = {**os.environ, **toa_emulator.env("*=v6vtoa:[2001:db8::1]:1+vs:7:[192.0.2.1]:80", library=emulator)}
    code = "import socket; socket.socket().getsockopt(socket.IPPROTO_IP, 4096, 20)"
    proc = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "IPv6 VIP after v6vtoa: only" in proc.stderr
