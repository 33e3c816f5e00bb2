"""``realip doctor``: the parsers on hand-written /proc text, the findings on
fixture trees, and the real command on this machine (with and without the TOA
emulator preloaded, and against real listeners opened by the test)."""

# The /proc fixture lines are as long as the kernel writes them.
# ruff: noqa: E501

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest

from realip import doctor
from realip.__main__ import main
from realip.connection import DEFAULT_TOA_PEERS
from realip.doctor import Listener, ModuleSigns, Process
from realip.toa import TOAAnswer, TOAStatus

from . import toa_emulator

TESTS = Path(__file__).resolve().parent

# /proc/net/tcp and tcp6 as a little-endian (x86, arm64) kernel prints them,
# written by hand: every address is 4-byte words in host byte order.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 41002 1 0000000000000000 100 0 0 10 0
   2: 0302010A:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F40 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 41004 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:9C4A 0100007F:1F40 06 00000000:00000000 03:000012C8 00000000     0        0 0 3 0000000000000000
   5: 0A00A8C0:0016 6400A8C0:C350 01 00000000:00000000 02:0009E0D8 00000000     0        0 41005 2 0000000000000000 20 4 31 10 -1
   6: garbage
"""

PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 42001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F42 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 42002 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F43 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 42003 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 42004 1 0000000000000000 100 0 0 10 0
   4: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 42005 1 0000000000000000 100 0 0 10 0
   5: 0000000000000000FFFF00000100007F:1F41 0000000000000000FFFF00000100007F:E1A2 01 00000000:00000000 00:00000000 00000000  1000        0 42006 1 0000000000000000 20 4 30 10 -1
   6: 00000000000000000000000001000000:1F42 00000000000000000000000001000000:B0C1 06 00000000:00000000 03:00000AC0 00000000     0        0 0 3 0000000000000000
"""


def v4(text: str) -> IPv4Address:
    return IPv4Address(text)


def v6(text: str) -> IPv6Address:
    return IPv6Address(text)


# ---- parsers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0100007F", "127.0.0.1"),
        ("00000000", "0.0.0.0"),
        ("0302010A", "10.1.2.3"),
        ("0A00A8C0", "192.168.0.10"),
        ("00000000000000000000000000000000", "::"),
        ("00000000000000000000000001000000", "::1"),
        ("0000000000000000FFFF00000100007F", "::ffff:127.0.0.1"),
        ("B80D0120000000000000000001000000", "2001:db8::1"),
        ("000080FE00000000FFAC8902B9EB2BFE", "fe80::289:acff:fe2b:ebb9"),
    ],
)
def test_proc_addresses_are_network_bytes_in_little_endian_words(text: str, expected: str) -> None:
    assert doctor.decode_proc_address(text, "little") == ip_address(expected)


def test_proc_addresses_on_a_big_endian_kernel_are_printed_in_order() -> None:
    assert doctor.decode_proc_address("7F000001", "big") == v4("127.0.0.1")
    assert doctor.decode_proc_address("00000000000000000000FFFF7F000001", "big") == v6("::ffff:127.0.0.1")
    assert doctor.decode_proc_address("20010DB8000000000000000000000001", "big") == v6("2001:db8::1")


@pytest.mark.parametrize("text", ["7F0001", "", "0100007F00", "ZZ00007F"])
def test_proc_address_of_the_wrong_size_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        doctor.decode_proc_address(text, "little")


def test_only_listen_sockets_are_parsed_from_proc_net_tcp() -> None:
    listeners = doctor.parse_proc_net_tcp(PROC_NET_TCP.splitlines(), "tcp", "little")
    assert listeners == [
        Listener("tcp", v4("0.0.0.0"), 8000, 41001, 1000),
        Listener("tcp", v4("127.0.0.1"), 5432, 41002, 105),
        Listener("tcp", v4("10.1.2.3"), 443, 41003, 0),
    ]
    assert [listener.scope for listener in listeners] == ["wildcard", "loopback", "specific"]


def test_only_listen_sockets_are_parsed_from_proc_net_tcp6() -> None:
    listeners = doctor.parse_proc_net_tcp(PROC_NET_TCP6.splitlines(), "tcp6", "little")
    assert [(str(listener.address), listener.port, listener.inode) for listener in listeners] == [
        ("::", 8001, 42001),
        ("::1", 8002, 42002),
        (str(v6("::ffff:127.0.0.1")), 8003, 42003),
        ("2001:db8::1", 443, 42004),
        ("::", 8000, 42005),
    ]
    assert [listener.scope for listener in listeners] == ["wildcard", "loopback", "mapped", "specific", "wildcard"]
    assert [listener.endpoint for listener in listeners][:3] == ["[::]:8001", "[::1]:8002", "[::ffff:127.0.0.1]:8003"]


def test_the_parser_reads_what_this_kernel_writes() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4, socket.socket(socket.AF_INET6) as s6:
        s4.bind(("127.0.0.1", 0))
        s4.listen(1)
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s6.bind(("::ffff:127.0.0.1", 0))
        s6.listen(1)
        listeners, unreadable = doctor.read_listeners(Path("/"))
        assert unreadable == []
        mine = {(listener.family, str(listener.address), listener.port) for listener in listeners}
        assert ("tcp", "127.0.0.1", s4.getsockname()[1]) in mine
        assert ("tcp6", str(v6("::ffff:127.0.0.1")), s6.getsockname()[1]) in mine


# ---- fixture trees -------------------------------------------------------------


def make_root(tmp_path: Path, files: dict[str, str], dirs: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "root"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in dirs:
        (root / name).mkdir(parents=True, exist_ok=True)
    root.mkdir(exist_ok=True)
    return root


def test_sysctls_from_a_fixture_tree(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"proc/sys/net/ipv6/bindv6only": "1\n", "proc/sys/net/ipv4/ip_forward": "0\n"})
    assert doctor.read_sysctl(root, "net.ipv6.bindv6only") == 1
    assert doctor.read_sysctl(root, "net.ipv4.ip_forward") == 0
    assert doctor.read_sysctl(root, "net.ipv4.tcp_nonexistent") is None


def test_bindv6only_findings() -> None:
    dual = doctor.bindv6only_finding(0)
    assert dual.status == "ok"
    assert "::ffff:a.b.c.d" in dual.summary
    assert "realip unwraps them" in dual.summary
    only = doctor.bindv6only_finding(1)
    assert "IPv6-only" in only.summary
    assert "0.0.0.0" in only.advice
    assert "IPV6_V6ONLY=0" in only.advice
    assert doctor.bindv6only_finding(None).data == {"value": None}


def test_ip_forward_findings() -> None:
    assert doctor.ip_forward_finding(0).advice == ""
    forwarding = doctor.ip_forward_finding(1)
    assert forwarding.status == "info"
    assert "routes IPv4" in forwarding.summary
    assert "docker-proxy" in forwarding.advice


def test_module_signs_from_a_fixture_tree(tmp_path: Path) -> None:
    stats = "TCP TOA stats\n syn_recv_sock_toa 12\n getname_toa_ok 10\n"
    root = make_root(
        tmp_path,
        {
            "proc/modules": "toa_extra 1 0 - Live 0x0\ntoa 16384 0 - Live 0x0000000000000000 (OE)\nnf_nat 49152 0\n",
            "proc/net/toa_stats": stats,
        },
        dirs=("sys/module/toa",),
    )
    signs = doctor.read_module_signs(root)
    assert signs == ModuleSigns(sys_module=True, proc_modules=True, toa_stats=stats.rstrip())
    finding = doctor.toa_module_finding(signs, shim_available=True)
    assert "TOA module present" in finding.summary
    assert finding.data["toa_stats"] == stats.rstrip()
    assert "          getname_toa_ok 10" in doctor.render_text(doctor.Report([finding], probes=True))


def test_a_module_merely_starting_with_toa_is_not_the_toa_module(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"proc/modules": "toa_extra 1 0 - Live 0x0\n"})
    assert doctor.read_module_signs(root) == ModuleSigns(False, False, None)
    assert not doctor.read_module_signs(tmp_path / "nothing-here").present


def test_socket_owners_from_a_fixture_tree(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"proc/123/comm": "gunicorn\n", "proc/124/comm": "gunicorn\n", "proc/200/comm": "x\n"})
    for pid, links in {"123": {"3": "socket:[555]", "4": "pipe:[9]"}, "124": {"5": "socket:[555]"},
                       "200": {"0": "/dev/null", "7": "socket:[777]"}}.items():  # fmt: skip
        (root / "proc" / pid / "fd").mkdir(parents=True)
        for fd, target in links.items():
            (root / "proc" / pid / "fd" / fd).symlink_to(target)
    (root / "proc" / "self").mkdir()  # not a pid: ignored
    owners = doctor.socket_owners({555, 999}, root)
    assert owners == {555: [Process(123, "gunicorn"), Process(124, "gunicorn")]}


def test_socket_owners_finds_this_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        listeners, _ = doctor.read_listeners(Path("/"))
        (mine,) = [found for found in listeners if found.family == "tcp" and found.port == port]
        owners = doctor.socket_owners({mine.inode}, Path("/"))
    assert os.getpid() in [process.pid for process in owners[mine.inode]]


# ---- findings ----------------------------------------------------------------------


def fixture_listeners() -> list[Listener]:
    return doctor.parse_proc_net_tcp(PROC_NET_TCP.splitlines(), "tcp", "little") + doctor.parse_proc_net_tcp(
        PROC_NET_TCP6.splitlines(), "tcp6", "little"
    )


def by_port(findings: list[doctor.Finding], family: str = "tcp6") -> dict[int, doctor.Finding]:
    return {f.data["port"]: f for f in findings if f.check == "listener" and f.data["family"] == family}


def test_listener_findings_classify_each_kind_of_listener() -> None:
    asked: list[int] = []

    def accepts_ipv4(port: int) -> bool | None:
        asked.append(port)
        return {8001: True}.get(port, False)

    owners = {42001: [Process(10, "uvicorn"), Process(11, "uvicorn")]}
    findings = doctor.listener_findings(fixture_listeners(), bindv6only=0, accepts_ipv4=accepts_ipv4, owners=owners)
    # 8000 has a tcp4 listener on 0.0.0.0: a connection to 127.0.0.1 would reach that, so no probe there.
    assert asked == [8001]
    tcp6 = by_port(findings)
    assert tcp6[8001].data["accepts_ipv4"] is True
    assert tcp6[8001].data["ipv4_decided_by"] == "probe"
    assert "dual-stack" in tcp6[8001].summary
    assert "netstat" in tcp6[8001].advice
    assert "uvicorn (pid 10, 11)" in tcp6[8001].summary
    assert tcp6[8001].data["processes"] == [{"pid": 10, "name": "uvicorn"}, {"pid": 11, "name": "uvicorn"}]
    assert tcp6[8000].data["ipv4_decided_by"] == "tcp4-listener"
    assert tcp6[8000].data["ipv4_listeners"] == ["0.0.0.0:8000"]
    assert tcp6[8002].data["scope"] == "loopback"
    assert tcp6[8003].data["scope"] == "mapped"
    assert tcp6[8003].data["address"] == "::ffff:127.0.0.1"
    assert tcp6[443].data["scope"] == "specific"
    tcp = by_port(findings, "tcp")
    assert sorted(tcp) == [443, 5432, 8000]
    assert tcp[5432].status == "info"
    assert tcp[8000].status == "ok"


def test_a_refused_ipv4_probe_means_ipv6_only() -> None:
    listeners = [Listener("tcp6", v6("::"), 9000, 1)]
    (finding,) = doctor.listener_findings(listeners, bindv6only=0, accepts_ipv4=lambda port: False)
    assert finding.status == "warn"
    assert finding.data["accepts_ipv4"] is False
    assert "IPv6 only" in finding.summary
    assert "0.0.0.0:9000" in finding.advice


def test_without_probes_the_wildcard_listener_is_described_from_bindv6only() -> None:
    listeners = [Listener("tcp6", v6("::"), 9000, 1)]
    (dual,) = doctor.listener_findings(listeners, bindv6only=0, accepts_ipv4=None)
    assert dual.data["accepts_ipv4"] is None
    assert dual.data["ipv4_decided_by"] == "not-probed"
    assert "dual-stack unless" in dual.summary
    (only,) = doctor.listener_findings(listeners, bindv6only=1, accepts_ipv4=None)
    assert "IPv6 only unless" in only.summary


def test_port_probes_are_bounded_and_shared_by_listeners_on_one_port() -> None:
    listeners = [Listener("tcp6", v6("::"), port, port) for port in (9001, 9002, 9003)]
    listeners.append(Listener("tcp6", v6("::"), 9001, 77))  # SO_REUSEPORT twin: grouped, probed once
    asked: list[int] = []
    findings = doctor.listener_findings(
        listeners, bindv6only=0, accepts_ipv4=lambda port: asked.append(port) or True, max_probes=2
    )
    assert asked == [9001, 9002]
    assert [f.data["ipv4_decided_by"] for f in findings] == ["probe", "probe", "probe-limit"]
    assert findings[0].data["inodes"] == [9001, 77]


def test_no_listeners_at_all() -> None:
    (finding,) = doctor.listener_findings([], bindv6only=0, accepts_ipv4=None)
    assert finding.check == "listeners"
    assert "no TCP listeners" in finding.summary


def answer(status: TOAStatus, err: int = 0, **kwargs: Any) -> TOAAnswer:
    return TOAAnswer(status, errno=err, **kwargs)


NO_SIGNS = ModuleSigns(False, False, None)
ALL_SIGNS = ModuleSigns(True, True, "stats")


def test_toa_probe_findings() -> None:
    absent = doctor.toa_probe_finding(answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT), NO_SIGNS)
    assert absent.summary == (
        "live probe: no TOA module loaded: NAT64 clients will appear as the load balancer (100.125.x.x)"
    )
    assert absent.data == {"status": "no-module", "errno": errno.ENOPROTOOPT, "errno_name": "ENOPROTOOPT"}

    ipv4_only_build = doctor.toa_probe_finding(answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT), ALL_SIGNS)
    assert ipv4_only_build.status == "warn"
    assert "does not answer the NAT64 lookup" in ipv4_only_build.summary

    answering = doctor.toa_probe_finding(answer(TOAStatus.NONE, errno.EINVAL), ALL_SIGNS)
    assert answering.status == "ok"
    assert answering.summary == (
        "live probe: module loaded and answering (this loopback connection carried no option, as expected)"
    )

    found = doctor.toa_probe_finding(answer(TOAStatus.FOUND, address=v6("2001:db8::5"), port=40000), ALL_SIGNS)
    assert found.status == "warn"
    assert "[2001:db8::5]:40000" in found.summary
    assert found.data["address"] == "2001:db8::5"

    odd = doctor.toa_probe_finding(answer(TOAStatus.ERROR, errno.EIO), ALL_SIGNS)
    assert odd.status == "warn"
    assert "EIO" in odd.summary

    rewritten = doctor.toa_probe_finding(answer(TOAStatus.NONE, errno.EFAULT), ALL_SIGNS)
    assert rewritten.status == "warn"

    failed = doctor.toa_probe_finding(None, NO_SIGNS, setup_error="OSError: no loopback")
    assert "could not open a loopback connection" in failed.summary


def test_nat64_advice() -> None:
    listeners = fixture_listeners()
    warned = doctor.nat64_finding(True, listeners)
    assert warned.status == "warn"
    # ::1 and ::ffff:127.0.0.1 cannot be reached by a load balancer; the others can.
    assert warned.data["af_inet6_listeners"] == ["[2001:db8::1]:443", "[::]:8000", "[::]:8001"]
    assert "0.0.0.0 (AF_INET)" in warned.advice
    for network in DEFAULT_TOA_PEERS:
        assert network in warned.advice
    assert warned.data["toa_peers"] == list(DEFAULT_TOA_PEERS)
    assert doctor.nat64_finding(True, [listener for listener in listeners if listener.family == "tcp"]).status == "ok"
    general = doctor.nat64_finding(False, listeners)
    assert general.status == "info"
    assert "firewall" in general.advice


def test_collect_on_a_fixture_tree(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "proc/sys/net/ipv6/bindv6only": "0\n",
            "proc/sys/net/ipv4/ip_forward": "1\n",
            "proc/modules": "toa 16384 0 - Live 0x0\n",
            "proc/net/tcp": PROC_NET_TCP,
            "proc/net/tcp6": PROC_NET_TCP6,
        },
    )
    report = doctor.collect(
        root=root,
        toa_probe=lambda: answer(TOAStatus.NONE, errno.EINVAL),
        accepts_ipv4=lambda port: True,
    )
    checks = [finding.check for finding in report.findings]
    assert checks[:4] == ["bindv6only", "ip_forward", "toa_module", "toa_probe"]
    assert checks[-1] == "nat64"
    assert report.findings[-1].status == "warn"  # module loaded and [::] listeners exist
    assert_schema(report.to_json())
    text = doctor.render_text(report)
    assert "\033[" not in text
    assert "TCP listeners (this network namespace)" in text


# ---- the real command ------------------------------------------------------------------


def _realip_parent() -> Path:
    spec = importlib.util.find_spec("realip")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).resolve().parents[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toa_emulator.build(tmp_path_factory.mktemp("toa_emulator"))


RunDoctor = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_doctor(tmp_path: Path) -> RunDoctor:
    """``run_doctor(*args, extra_env=None, code=None)``: ``python -m realip doctor ARGS`` in a fresh process."""

    def run(
        *args: str, extra_env: dict[str, str] | None = None, code: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("TOA_EMU")}
        # `python -m` puts the working directory first on sys.path: run from an empty one.
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(_realip_parent()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        environment.update(extra_env or {})
        command = [sys.executable, "-m", "realip", *args] if code is None else [sys.executable, "-c", code, *args]
        proc = subprocess.run(
            command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, f"realip {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
        assert proc.stderr == ""
        return proc

    return run


def assert_schema(report: dict[str, Any]) -> None:
    assert set(report) == {"tool", "schema", "realip", "platform", "probes", "counts", "findings"}
    assert report["tool"] == "realip doctor"
    assert report["schema"] == doctor.SCHEMA_VERSION == 1
    assert isinstance(report["probes"], bool)
    assert set(report["platform"]) == {"system", "release", "python"}
    assert set(report["counts"]) == {"ok", "info", "warn", "problem"}
    assert sum(report["counts"].values()) == len(report["findings"])
    for finding in report["findings"]:
        assert set(finding) == {"check", "status", "summary", "advice", "data"}
        assert finding["check"] in doctor.CHECKS
        assert finding["status"] in ("ok", "info", "warn", "problem")
        assert isinstance(finding["summary"], str) and finding["summary"]
        assert "\n" not in finding["summary"]
        assert isinstance(finding["advice"], str)
        assert isinstance(finding["data"], dict)


def findings_of(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [finding for finding in report["findings"] if finding["check"] == check]


NO_MODULE_LINE = "no TOA module loaded: NAT64 clients will appear as the load balancer (100.125.x.x)"
ANSWERING_LINE = "module loaded and answering (this loopback connection carried no option, as expected)"

needs_host_without_module = pytest.mark.skipif(
    Path("/sys/module/toa").exists(), reason="this host has a real TOA module loaded"
)


@needs_host_without_module
def test_doctor_on_this_machine_says_there_is_no_toa_module(run_doctor: RunDoctor) -> None:
    text = run_doctor("doctor").stdout
    assert text.startswith("realip doctor ")
    assert NO_MODULE_LINE in text
    assert "net.ipv6.bindv6only = " in text
    assert "TCP listeners" in text
    assert "\033[" not in text  # not a tty: no colours
    for section in ("Kernel settings", "TOA module (NAT64 load balancers)", "NAT64 deployments"):
        assert f"\n{section}\n" in text

    report = json.loads(run_doctor("doctor", "--json").stdout)
    assert_schema(report)
    (probe,) = findings_of(report, "toa_probe")
    assert probe["status"] == "info"
    assert probe["data"] == {"status": "no-module", "errno": errno.ENOPROTOOPT, "errno_name": "ENOPROTOOPT"}
    assert NO_MODULE_LINE in probe["summary"]
    (module,) = findings_of(report, "toa_module")
    assert module["data"]["shim_available"] is True
    (nat64,) = findings_of(report, "nat64")
    assert nat64["data"]["module_loaded"] is False


def test_doctor_with_the_emulated_module_present(run_doctor: RunDoctor, emulator: Path, tmp_path: Path) -> None:
    log = tmp_path / "lookups.log"
    env = toa_emulator.env({}, log, library=emulator, module=True)
    assert ANSWERING_LINE in run_doctor("doctor", extra_env=env).stdout
    report = json.loads(run_doctor("doctor", "--json", extra_env=env).stdout)
    assert_schema(report)
    (probe,) = findings_of(report, "toa_probe")
    assert probe["status"] == "ok"
    assert probe["data"]["status"] == "none"
    assert probe["data"]["errno_name"] == "EINVAL"
    (nat64,) = findings_of(report, "nat64")
    assert nat64["data"]["module_loaded"] is True
    # One lookup per run: the live probe, on a connected socket from 127.0.0.1.
    entries = toa_emulator.read_log(log)
    assert len(entries) == 2
    assert {(entry.peer, entry.result) for entry in entries} == {("127.0.0.1", errno.EINVAL)}


def test_doctor_with_the_emulated_module_absent(run_doctor: RunDoctor, emulator: Path) -> None:
    env = toa_emulator.env({}, library=emulator, module=False)
    assert env["TOA_EMU_MODULE"] == "absent"
    assert NO_MODULE_LINE in run_doctor("doctor", extra_env=env).stdout
    report = json.loads(run_doctor("doctor", "--json", extra_env=env).stdout)
    (probe,) = findings_of(report, "toa_probe")
    assert probe["data"]["status"] == "no-module"


@pytest.mark.parametrize(
    ("rule", "status", "needle"),
    [
        ("nat64:[2001:db8::5]:40000", "found", "[2001:db8::5]:40000"),
        ("errno:5", "error", "EIO"),
    ],
)
def test_doctor_reports_odd_answers_for_a_loopback_connection(
    run_doctor: RunDoctor, emulator: Path, rule: str, status: str, needle: str
) -> None:
    env = toa_emulator.env({"127.0.0.1": rule}, library=emulator)
    report = json.loads(run_doctor("doctor", "--json", "--no-probe", extra_env=env).stdout)
    (probe,) = findings_of(report, "toa_probe")
    assert probe["status"] == "warn"
    assert probe["data"]["status"] == status
    assert needle in probe["summary"]


def test_doctor_without_the_compiled_shim(run_doctor: RunDoctor) -> None:
    code = (
        "import sys\n"
        "sys.modules['realip._toa._toa_lib'] = None  # any import of it raises ImportError\n"
        "from realip.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    report = json.loads(run_doctor("doctor", "--json", "--no-probe", code=code).stdout)
    (probe,) = findings_of(report, "toa_probe")
    assert probe["data"]["status"] == "unavailable"
    assert probe["status"] == "warn"
    assert "not compiled" in probe["summary"]
    (module,) = findings_of(report, "toa_module")
    assert module["data"]["shim_available"] is False


@contextlib.contextmanager
def listening(family: int, host: str, port: int = 0, *, v6only: bool | None = None) -> Iterator[socket.socket]:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if v6only is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((host, port))
        sock.listen(8)
        yield sock
    finally:
        sock.close()


def free_port_in_both_families() -> int:
    """A port free for 0.0.0.0 and [::] alike (checked by a dual-stack bind)."""
    with listening(socket.AF_INET6, "::", v6only=False) as probe:
        return int(probe.getsockname()[1])


def test_doctor_tells_dual_stack_from_ipv6_only_listeners(run_doctor: RunDoctor, loopback_v6: None) -> None:
    shared_port = free_port_in_both_families()
    with (
        listening(socket.AF_INET6, "::", v6only=False) as dual,
        listening(socket.AF_INET6, "::", v6only=True) as v6only,
        listening(socket.AF_INET6, "::1", v6only=True) as loopback,
        listening(socket.AF_INET6, "::", shared_port, v6only=True) as beside_ipv4,
        listening(socket.AF_INET, "0.0.0.0", shared_port),
    ):
        dual_port, v6only_port = dual.getsockname()[1], v6only.getsockname()[1]
        loopback_port, beside_port = loopback.getsockname()[1], beside_ipv4.getsockname()[1]
        report = json.loads(run_doctor("doctor", "--json").stdout)
        unprobed = json.loads(run_doctor("doctor", "--json", "--no-probe").stdout)
        text = run_doctor("doctor").stdout
    assert_schema(report)
    listeners = {
        (f["data"]["family"], f["data"]["address"], f["data"]["port"]): f for f in findings_of(report, "listener")
    }

    dual_stack = listeners["tcp6", "::", dual_port]
    assert dual_stack["data"]["accepts_ipv4"] is True
    assert dual_stack["data"]["ipv4_decided_by"] == "probe"
    assert dual_stack["data"]["scope"] == "wildcard"
    assert "dual-stack" in dual_stack["summary"]
    assert "netstat" in dual_stack["advice"]
    assert os.getpid() in [process["pid"] for process in dual_stack["data"]["processes"]]

    ipv6_only = listeners["tcp6", "::", v6only_port]
    assert ipv6_only["status"] == "warn"
    assert ipv6_only["data"]["accepts_ipv4"] is False
    assert ipv6_only["data"]["ipv4_decided_by"] == "probe"
    assert "IPv6 only" in ipv6_only["summary"]

    assert listeners["tcp6", "::1", loopback_port]["data"]["scope"] == "loopback"

    shared = listeners["tcp6", "::", beside_port]
    assert shared["data"]["ipv4_decided_by"] == "tcp4-listener"
    assert shared["data"]["ipv4_listeners"] == [f"0.0.0.0:{shared_port}"]
    assert ("tcp", "0.0.0.0", shared_port) in listeners

    assert report["probes"] is True
    assert unprobed["probes"] is False
    for finding in findings_of(unprobed, "listener"):
        if finding["data"]["scope"] == "wildcard" and finding["data"]["family"] == "tcp6":
            assert finding["data"]["ipv4_decided_by"] in ("not-probed", "tcp4-listener")

    assert f"[::]:{dual_port}" in text
    assert "→ netstat/ss list this port only as tcp6" in text


# ---- the command line -------------------------------------------------------------------


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["doctor", "--bogus"]) == 2
    assert main(["nonsense"]) == 2
    assert "usage: realip" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--help"]) == 0
    assert "--no-probe" in capsys.readouterr().out


def test_main_runs_doctor_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json", "--no-probe"]) == 0
    assert_schema(json.loads(capsys.readouterr().out))


def test_help_lists_every_expectation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--expect WHAT" in text
    for name in doctor.EXPECTATIONS:
        assert f"\n  {name} " in text
    assert main(["doctor", "--expect", "kubernetes"]) == 2


# ---- the package: one module per thing checked, imports pointing down -----------------------

DOCTOR_PACKAGE = Path(doctor.__file__).resolve().parent


def _doctor_imports() -> dict[str, set[str]]:
    """module -> the modules of realip.doctor it imports; fails on an import inside a function."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in DOCTOR_PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nested = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not nested, f"{path.name}: import inside {node.name}()"
        graph[path.stem] = {
            node.module.split(".")[0]
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
    return graph


def test_the_doctor_package_imports_point_down_only() -> None:
    graph = _doctor_imports()
    assert {"model", "sysctls", "listeners", "toa_module", "environment", "expectations", "render", "run"} <= set(graph)
    assert graph["model"] == set()  # the bottom: everyone uses it, it uses no one here
    assert "__init__" not in {target for targets in graph.values() for target in targets}

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t})) for t in graph.get(start, ()))

    cycles = [module for module in graph if reaches(module, module)]
    assert not cycles, cycles


def test_the_package_exposes_what_doctor_py_exposed() -> None:
    for name in [
        "SCHEMA_VERSION", "CHECKS", "Finding", "Listener", "ModuleSigns", "Process", "Report",
        "bindv6only_finding", "collect", "decode_proc_address", "ip_forward_finding", "listener_findings",
        "nat64_finding", "parse_proc_net_tcp", "probe_accepts_ipv4", "probe_toa", "read_listeners",
        "read_module_signs", "read_sysctl", "render_json", "render_text", "socket_owners",
        "toa_module_finding", "toa_probe_finding", "PROBE_TIMEOUT", "MAX_PORT_PROBES", "PORT_PROBES_BUDGET",
        "OWNER_SCAN_BUDGET", "TOA_STATS_LIMIT",
    ]:  # fmt: skip
        assert hasattr(doctor, name), name
    assert set(doctor.__all__) <= set(dir(doctor))


# ---- layout: the text lines up, the JSON carries no padding ------------------------------


def assert_no_layout(report: dict[str, Any]) -> None:
    for finding in report["findings"]:
        for key in ("summary", "advice"):
            value = finding[key]
            assert value == value.strip(), (key, value)
            assert "  " not in value, (key, value)


def test_json_values_carry_no_layout_padding_and_the_text_lines_up(tmp_path: Path) -> None:
    root = make_root(
        tmp_path, {"proc/sys/net/ipv6/bindv6only": "0\n", "proc/net/tcp": PROC_NET_TCP, "proc/net/tcp6": PROC_NET_TCP6}
    )
    report = doctor.collect(root=root, toa_probe=lambda: answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT),
                            accepts_ipv4=lambda port: True, environ={})  # fmt: skip
    as_json = report.to_json()
    assert_no_layout(as_json)
    listeners = findings_of(as_json, "listener")
    assert "tcp6 [::]:8001 dual-stack: IPv4 clients appear as ::ffff:a.b.c.d (realip unwraps them)" in [
        f["summary"] for f in listeners
    ]
    # The human output pads family and endpoint into columns: every description starts at one column.
    text = doctor.render_text(report)
    starts = set()
    for finding in listeners:
        family, endpoint, description = finding["summary"].split(" ", 2)
        (line,) = [line for line in text.splitlines() if f" {family.ljust(4)}  {endpoint} " in line]
        assert line.endswith(description)
        starts.add(line.index(description))
    assert len(starts) == 1
    assert "  info    tcp6  [::]:8001                dual-stack: IPv4 clients" in text


def test_json_of_the_real_command_carries_no_layout_padding(run_doctor: RunDoctor) -> None:
    assert_no_layout(json.loads(run_doctor("doctor", "--json", "--no-probe").stdout))


# ---- REALIP_* variables ------------------------------------------------------------------


def by_variable(findings: list[doctor.Finding]) -> dict[str, doctor.Finding]:
    return {f.data["variable"]: f for f in findings if "variable" in f.data}


def test_variables_are_listed_with_their_values_validated_and_unknown_names_flagged() -> None:
    findings = doctor.environment_findings(
        {"REALIP_TOA_PEERS": "10.1.0.0/24", "REALIP_TOA": "maybe", "REALIP_TRUSTED_PROXY": "10.0.0.1", "PATH": "/x"}
    )
    assert all(f.check == "environment" for f in findings)
    found = by_variable(findings)
    assert sorted(found) == ["REALIP_TOA", "REALIP_TOA_PEERS", "REALIP_TRUSTED_PROXY"]

    ok = found["REALIP_TOA_PEERS"]
    assert (ok.status, ok.summary) == ("ok", "REALIP_TOA_PEERS='10.1.0.0/24'")
    assert ok.data == {"variable": "REALIP_TOA_PEERS", "value": "10.1.0.0/24", "known": True, "valid": True}

    bad = found["REALIP_TOA"]
    assert bad.status == "problem"
    assert bad.summary == "REALIP_TOA='maybe': not valid: expected on/off, true/false, yes/no or 1/0"
    assert bad.data["error"] == "realip: REALIP_TOA: 'maybe' is not valid: expected on/off, true/false, yes/no or 1/0"
    assert "see docs/troubleshooting.md#configerror-at-start-up" in bad.advice

    unknown = found["REALIP_TRUSTED_PROXY"]
    assert unknown.status == "warn"
    assert unknown.summary == "REALIP_TRUSTED_PROXY='10.0.0.1': not a realip variable, it does nothing"
    assert unknown.advice == "did you mean REALIP_TRUSTED_PROXIES?"
    assert unknown.data["did_you_mean"] == "REALIP_TRUSTED_PROXIES"
    assert unknown.data["known"] is False


def test_every_bad_variable_is_reported_not_only_the_first() -> None:
    findings = doctor.environment_findings(
        {
            "REALIP_TRUSTED_PROXIES": "10.0.0.1/8",
            "REALIP_ON_FAILURE": "explode",
            "REALIP_PROXY_PROTOCOL_OTHERS": "nope",
            "REALIP_STRATEGY": "forwarded",
        }
    )
    statuses = {name: finding.status for name, finding in by_variable(findings).items()}
    assert statuses == {
        "REALIP_TRUSTED_PROXIES": "problem",
        "REALIP_ON_FAILURE": "problem",
        "REALIP_PROXY_PROTOCOL_OTHERS": "problem",
        "REALIP_STRATEGY": "ok",
    }
    assert "host bits set" in by_variable(findings)["REALIP_TRUSTED_PROXIES"].data["hint"]


def test_unknown_names_are_matched_against_the_one_list_of_variables() -> None:
    from realip.config import ENVIRONMENT_VARIABLES

    for name in ENVIRONMENT_VARIABLES:
        (finding,) = [f for f in doctor.environment_findings({name: ""}) if f.data.get("variable") == name]
        assert finding.data["known"] is True, name
    (typo,) = doctor.environment_findings({"REALIP_STRIP_UNTRUSTED_HEADER": "on"})
    assert typo.data["did_you_mean"] == "REALIP_STRIP_UNTRUSTED_HEADERS"
    (nothing_close,) = doctor.environment_findings({"REALIP_SOMETHING_ELSE_ENTIRELY": "1"})
    assert nothing_close.data["did_you_mean"] is None
    assert "REALIP_TRUSTED_PROXIES" in nothing_close.advice


def test_no_variables_at_all() -> None:
    (finding,) = doctor.environment_findings({"PATH": "/usr/bin"})
    assert finding.status == "info"
    assert "no REALIP_* variables" in finding.summary


def test_the_real_command_lists_the_variables_of_its_environment(run_doctor: RunDoctor) -> None:
    env = {"REALIP_TRUSTED_PROXY": "10.0.0.1", "REALIP_TOA_PEERS": "10.1.0.0/24", "REALIP_STRATEGY": "bogus"}
    report = json.loads(run_doctor("doctor", "--json", "--no-probe", extra_env=env).stdout)  # and nothing on stderr
    assert_schema(report)
    found = {f["data"]["variable"]: f for f in findings_of(report, "environment") if "variable" in f["data"]}
    assert found["REALIP_TRUSTED_PROXY"]["data"]["did_you_mean"] == "REALIP_TRUSTED_PROXIES"
    assert found["REALIP_TOA_PEERS"]["status"] == "ok"
    assert found["REALIP_STRATEGY"]["status"] == "problem"
    text = run_doctor("doctor", "--no-probe", extra_env=env).stdout
    assert "\nConfiguration (REALIP_* variables of this environment)\n" in text
    assert "REALIP_TRUSTED_PROXY='10.0.0.1': not a realip variable, it does nothing" in text


# ---- a reverse proxy's own listener --------------------------------------------------------


def test_a_reverse_proxys_listener_is_info_naming_the_proxy() -> None:
    owners = {42001: [Process(5, "nginx"), Process(6, "nginx")], 41001: [Process(7, "gunicorn")]}
    findings = doctor.listener_findings(
        fixture_listeners(), bindv6only=0, accepts_ipv4=lambda port: False, owners=owners
    )
    proxy = by_port(findings)[8001]
    assert proxy.status == "info"  # not the WARN an IPv6-only app listener gets
    assert proxy.summary == "nginx listens on [::]:8001: a reverse proxy in front of the app [nginx (pid 5, 6)]"
    assert proxy.data["reverse_proxy"] == "nginx"
    assert proxy.data["accepts_ipv4"] is False
    assert "REALIP_TRUSTED_PROXIES" in proxy.advice
    assert by_port(findings, "tcp")[8000].status == "ok"
    assert "reverse_proxy" not in by_port(findings, "tcp")[8000].data
    # The NAT64 advice leaves the proxy's AF_INET6 listener out of the app's.
    nat64 = doctor.nat64_finding(True, fixture_listeners(), owners=owners)
    assert "[::]:8001" not in nat64.data["af_inet6_listeners"]
    assert nat64.data["reverse_proxy_af_inet6_listeners"] == ["[::]:8001"]


@pytest.mark.parametrize("name", sorted(doctor.REVERSE_PROXIES))
def test_every_known_reverse_proxy_is_recognised(name: str) -> None:
    (finding,) = doctor.listener_findings(
        [Listener("tcp", v4("0.0.0.0"), 80, 1)], bindv6only=0, accepts_ipv4=None, owners={1: [Process(9, name)]}
    )
    assert finding.summary.startswith(f"{name} listens on 0.0.0.0:80: a reverse proxy in front of the app")


NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 16; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{ listen [::]:{port}; return 204; }}
}}
"""


def test_the_real_command_names_a_running_nginx(run_doctor: RunDoctor, tmp_path: Path, loopback_v6: None) -> None:
    """nginx's `listen [::]:PORT` is IPv6-only (its ipv6only=on default): an app listener
    like that is a WARN, nginx's own is reported as the proxy in front."""
    import signal
    import time

    from .support.programs import require_program

    binary = require_program("nginx")
    port = free_port_in_both_families()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port))
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (prefix / "error.log").read_text()
            try:
                socket.create_connection(("::1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        report = json.loads(run_doctor("doctor", "--json").stdout)
        text = run_doctor("doctor").stdout
    finally:
        os.killpg(process.pid, signal.SIGQUIT)
        process.wait(10)
    (mine,) = [f for f in findings_of(report, "listener") if f["data"]["port"] == port]
    assert mine["status"] == "info"
    assert mine["data"]["reverse_proxy"] == "nginx"
    assert mine["data"]["accepts_ipv4"] is False
    assert mine["summary"].startswith(f"nginx listens on [::]:{port}: a reverse proxy in front of the app [nginx (pid ")
    assert f"nginx listens on [::]:{port}: a reverse proxy in front of the app" in text


# ---- the TOA module: only the load balancer may reach this host ----------------------------


def test_with_a_module_the_doctor_says_only_the_load_balancer_may_reach_the_host(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"proc/modules": "toa 16384 0 - Live 0x0\n"})
    report = doctor.collect(root=root, toa_probe=lambda: answer(TOAStatus.NONE, errno.EINVAL), environ={})
    (firewall,) = [f for f in report.findings if f.check == "toa_firewall"]
    assert firewall.status == "warn"
    assert "only the load balancer may reach the ports of this host" in firewall.summary
    assert "panics the kernel" in firewall.advice
    assert "a NAT64 option followed by an IPv4 TOA option" in firewall.advice
    assert "see docs/toa.md#2-let-only-the-load-balancer-in" in firewall.advice
    for network in DEFAULT_TOA_PEERS:
        assert network in firewall.advice
    without = doctor.collect(
        root=tmp_path / "empty", toa_probe=lambda: answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT), environ={}
    )
    assert "toa_firewall" not in [f.check for f in without.findings]


def test_the_emulated_module_gets_the_firewall_warning_too(run_doctor: RunDoctor, emulator: Path) -> None:
    env = toa_emulator.env({}, library=emulator, module=True)
    text = run_doctor("doctor", "--no-probe", extra_env=env).stdout
    assert "WARN    TOA module loaded: only the load balancer may reach the ports of this host" in text


# ---- --expect ----------------------------------------------------------------------------


def expect_report(tmp_path: Path, expect: list[str], *, module: bool = True, bindv6only: str = "0",
                  environ: dict[str, str] | None = None, accepts: bool = True, nginx_on: int | None = None,
                  ) -> doctor.Report:  # fmt: skip
    root = make_root(
        tmp_path,
        {
            "proc/sys/net/ipv6/bindv6only": bindv6only + "\n",
            "proc/net/tcp": PROC_NET_TCP,
            "proc/net/tcp6": PROC_NET_TCP6,
        },
    )
    if nginx_on is not None:
        (root / "proc" / "77" / "fd").mkdir(parents=True)
        (root / "proc" / "77" / "comm").write_text("nginx\n")
        (root / "proc" / "77" / "fd" / "6").symlink_to(f"socket:[{nginx_on}]")
    probe = answer(TOAStatus.NONE, errno.EINVAL) if module else answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT)
    return doctor.collect(
        root=root, toa_probe=lambda: probe, accepts_ipv4=lambda port: accepts, environ=environ or {}, expect=expect
    )


def requirements(report: doctor.Report) -> dict[tuple[str, str], doctor.Finding]:
    return {(f.data["expectation"], f.data["requirement"]): f for f in report.findings if f.check == "expect"}


def test_without_expect_nothing_changes(tmp_path: Path) -> None:
    report = expect_report(tmp_path, [])
    assert "expect" not in [f.check for f in report.findings]
    assert report.expect == ()
    assert report.findings[-1].check == "nat64"


def test_expect_nat64_on_a_host_without_the_module(tmp_path: Path) -> None:
    report = expect_report(tmp_path, ["nat64"], module=False)
    found = requirements(report)
    lookup = found["nat64", "toa_lookup"]
    assert lookup.status == "problem"
    assert lookup.summary.startswith("nat64: no TOA module is loaded on this host")
    assert lookup.advice.endswith("see docs/toa.md#1-load-the-module-on-the-host")
    assert lookup.data["docs"] == "docs/toa.md#1-load-the-module-on-the-host"
    assert found["nat64", "af_inet_listener"].status == "ok"  # 0.0.0.0:8000 and 10.1.2.3:443
    exposed = found["nat64", "no_af_inet6_listener"]
    assert exposed.status == "problem"
    assert exposed.data["listeners"] == ["[2001:db8::1]:443", "[::]:8000", "[::]:8001"]
    assert "see docs/toa.md#3-listen-on-ipv4-0000-not-" in exposed.advice
    assert report.problems == 2
    text = doctor.render_text(report)
    assert "\nExpectations (--expect)\n" in text
    assert "  PROBLEM nat64: no TOA module is loaded on this host" in text
    assert "Expected (--expect): nat64: exit status 1" in text


@pytest.mark.parametrize(
    ("probe", "signs", "docs"),
    [
        (answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT), NO_SIGNS, "docs/toa.md#1-load-the-module-on-the-host"),
        (answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT), ALL_SIGNS, "docs/toa-module.md#other-vendors-modules"),
        (answer(TOAStatus.UNAVAILABLE, errno.ENOSYS), NO_SIGNS, "docs/toa.md#how-nat64-with-toa-works"),
        (answer(TOAStatus.ERROR, errno.EIO), ALL_SIGNS, "docs/toa-module.md#what-the-lookup-answers"),
        (None, NO_SIGNS, "docs/toa-module.md#what-the-lookup-answers"),
    ],
)
def test_each_reason_the_nat64_lookup_fails_points_at_its_fix(
    probe: TOAAnswer | None, signs: ModuleSigns, docs: str
) -> None:
    findings = [doctor.toa_probe_finding(probe, signs, setup_error="OSError: no loopback")]
    lookup = doctor.expectation_findings(["nat64"], findings)[0]
    assert lookup.data["requirement"] == "toa_lookup"
    assert lookup.status == "problem"
    assert lookup.data["docs"] == docs
    assert lookup.advice.endswith(f"see {docs}")


def test_expect_nat64_met_except_for_the_switch_turned_off(tmp_path: Path) -> None:
    report = expect_report(tmp_path, ["nat64"], environ={"REALIP_TOA": "off"})
    found = requirements(report)
    assert found["nat64", "toa_lookup"].status == "ok"
    off = found["nat64", "toa_enabled"]
    assert off.status == "problem"
    assert off.summary == "nat64: REALIP_TOA='off' turns realip's TOA lookup off"
    assert "see docs/toa.md#" in off.advice
    assert found["nat64", "no_af_inet6_listener"].status == "problem"


def test_expect_dual_stack(tmp_path: Path) -> None:
    good = requirements(expect_report(tmp_path / "good", ["dual-stack"]))
    assert [f.status for f in good.values()] == ["ok", "ok"]
    bad = expect_report(tmp_path / "bad", ["dual-stack"], bindv6only="1", accepts=False)
    found = requirements(bad)
    assert found["dual-stack", "bindv6only"].status == "problem"
    assert "see docs/servers.md#what-netipv6bindv6only-changes" in found["dual-stack", "bindv6only"].advice
    refused = found["dual-stack", "ipv4_accepted"]
    assert refused.status == "problem"
    assert refused.data["listeners"] == ["[::]:8001"]  # [::]:8000 shares its port with 0.0.0.0:8000
    assert "see docs/troubleshooting.md#ipv4-clients-are-refused-ipv6-works" in refused.advice
    # nginx's own IPv6-only listener is not the app's
    proxied = requirements(expect_report(tmp_path / "nginx", ["dual-stack"], accepts=False, nginx_on=42001))
    assert proxied["dual-stack", "ipv4_accepted"].status == "ok"


def test_expect_proxy(tmp_path: Path) -> None:
    missing = requirements(expect_report(tmp_path / "missing", ["proxy"]))["proxy", "trusted_proxies"]
    assert missing.status == "problem"
    assert "REALIP_TRUSTED_PROXIES is not set" in missing.summary
    assert "see docs/troubleshooting.md#uvicorn-shows-127001-or-the-proxys-address-for-every-client" in missing.advice

    invalid = expect_report(tmp_path / "invalid", ["proxy"], environ={"REALIP_TRUSTED_PROXIES": "10.0.0.1/8"})
    assert requirements(invalid)["proxy", "trusted_proxies"].status == "problem"
    assert (
        "see docs/troubleshooting.md#configerror-at-start-up"
        in requirements(invalid)["proxy", "trusted_proxies"].advice
    )
    assert invalid.problems == 2  # the variable itself, and the expectation

    local = expect_report(
        tmp_path / "local", ["proxy"], environ={"REALIP_TRUSTED_PROXIES": "10.0.0.0/8"}, nginx_on=41001
    )
    found = requirements(local)
    assert found["proxy", "trusted_proxies"].status == "ok"
    assert found["proxy", "local_proxy_trusted"].status == "warn"  # nginx may connect from another address
    assert local.problems == 0
    trusted = expect_report(tmp_path / "trusted", ["proxy"], environ={"REALIP_TRUSTED_PROXIES": "127.0.0.1,::1"},
                            nginx_on=41001)  # fmt: skip
    assert requirements(trusted)["proxy", "local_proxy_trusted"].status == "ok"


def test_expectations_can_be_combined_and_each_is_checked_once(tmp_path: Path) -> None:
    report = expect_report(tmp_path, ["dual-stack", "nat64", "dual-stack"])
    assert report.expect == ("dual-stack", "nat64", "dual-stack")
    assert [key[0] for key in requirements(report)] == ["dual-stack"] * 2 + ["nat64"] * 4
    with pytest.raises(ValueError, match="unknown expectation"):
        doctor.expectation_findings(["kubernetes"], report.findings)


def test_the_exit_status_follows_the_expectations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reports = {
        "met": expect_report(tmp_path / "met", ["dual-stack"]),
        "missing": expect_report(tmp_path / "missing", ["dual-stack"], bindv6only="1"),
    }
    asked: list[dict[str, Any]] = []

    def fake_collect(**options: Any) -> doctor.Report:
        asked.append(options)
        return reports[current]

    monkeypatch.setattr(doctor, "collect", fake_collect)
    current = "met"
    assert main(["doctor", "--expect", "dual-stack", "--no-probe"]) == 0
    assert asked[-1] == {"probes": False, "expect": ["dual-stack"]}
    current = "missing"
    assert main(["doctor", "--expect", "dual-stack"]) == 1
    assert "PROBLEM dual-stack: net.ipv6.bindv6only is 1" in capsys.readouterr().out
    assert main(["doctor", "--expect", "dual-stack", "--json"]) == 1
    assert findings_of(json.loads(capsys.readouterr().out), "expect")[0]["status"] == "problem"
    assert main(["doctor"]) == 0  # without --expect a problem never changes the exit status
    assert asked[-1]["expect"] == []


@needs_host_without_module
def test_expect_nat64_on_this_machine_fails_naming_the_docs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "realip", "doctor", "--expect", "nat64", "--no-probe"],
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
             "PYTHONPATH": str(_realip_parent())},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert "PROBLEM nat64: no TOA module is loaded on this host" in done.stdout
    assert "docs/toa.md#1-load-the-module-on-the-host" in done.stdout
    assert "Expected (--expect): nat64: exit status 1" in done.stdout
