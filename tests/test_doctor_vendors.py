"""``realip doctor`` knows each vendor's TOA module (docs/vendors/index.md), from fake
``/sys`` and ``/proc`` trees: its name, its counters, a rising "no TOA" count, the
interface it offers, what realip can check there, and the listener family to use."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

import realip.doctor as doctor
from realip.doctor import ModuleSigns
from realip.doctor.toa_module import module_profile, parse_counters
from realip.toa import TOAAnswer, TOAStatus

HEADER = "                                  CPU0       CPU1       \n"


def stats(counters: dict[str, tuple[int, int]]) -> str:
    """A counters file as the modules print it: a header of CPUs, then ``%-25s:`` and ``%10lu `` per CPU."""
    return HEADER + "".join(f"{name:<25s}:{a:10d} {b:10d} \n" for name, (a, b) in counters.items())


#: The 8 lines of Huawei's IPv6 build (dpvs has the same).
HUAWEI_IPV6 = {
    "syn_recv_sock_toa": (10, 2), "syn_recv_sock_no_toa": (3, 0), "getname_toa_ok": (9, 1),
    "getname_toa_mismatch": (0, 0), "getname_toa_bypass": (1, 0), "getname_toa_empty": (4, 4),
    "ip6_address_alloc": (5, 0), "ip6_address_free": (5, 0),
}  # fmt: skip
#: The 6 lines of Huawei's master build and UCloud's.
IPV4_ONLY = {k: v for k, v in HUAWEI_IPV6.items() if not k.startswith("ip6_")}
#: Alibaba vtoa's 9 lines.
VTOA = {
    "syn_recv_sock_toa": (7, 0), "syn_recv_sock_no_toa": (2, 0), "getname_toa_ok_v4": (7, 0),
    "getname_v6vtoa_ok": (1, 0), "getname_toa_ok_v6": (0, 0), "getname_toa_ok_mapped": (0, 0),
    "getname_toa_mismatch": (0, 0), "getname_toa_bypass": (0, 0), "getname_toa_empty": (3, 0),
}  # fmt: skip


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


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds}s although no 'no TOA' counter exists")


def answer(status: TOAStatus, err: int = 0) -> TOAAnswer:
    return TOAAnswer(status, errno=err)


EINVAL = answer(TOAStatus.NONE, errno.EINVAL)  # a module with the lookup, a loopback connection
ENOPROTOOPT = answer(TOAStatus.NO_MODULE, errno.ENOPROTOOPT)  # none, or one without the lookup


def test_counters_are_summed_over_cpus_and_foreign_lines_skipped() -> None:
    assert parse_counters(stats({"syn_recv_sock_toa": (10, 2), "getname_toa_ok": (0, 7)})) == {
        "syn_recv_sock_toa": 12,
        "getname_toa_ok": 7,
    }
    assert parse_counters("TCP TOA stats\n syn_recv_sock_toa 12\nbroken: x 1\n") == {"syn_recv_sock_toa": 12}


def test_alibaba_vtoa_with_a_rising_no_toa_counter(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "proc/modules": "vtoa 40960 0 - Live 0x0 (OE)\nnf_nat 49152 0\n",
            "proc/net/vtoa_stats": stats(VTOA),
            "proc/sys/net/ipv4/slb_vtoa/v6vtoa_info_mode": "0\n",
        },
        dirs=("sys/module/vtoa",),
    )
    waited: list[float] = []

    def later(seconds: float) -> None:  # a second passes: 40 more connections without an option, none with one
        waited.append(seconds)
        more = {**VTOA, "syn_recv_sock_no_toa": (22, 20)}
        (root / "proc/net/vtoa_stats").write_text(stats(more))

    signs = doctor.read_module_signs(root, sleep=later)
    assert waited == [1.0]
    assert signs.modules == ("vtoa",) and signs.names == ("vtoa",) and signs.present
    assert not signs.sys_module and signs.toa_stats is None  # the fields about a module named toa
    assert signs.counters["vtoa_stats"]["getname_v6vtoa_ok"] == 1
    assert signs.rising == {"vtoa_stats": {"syn_recv_sock_no_toa": 40}}
    assert signs.v6vtoa_info_mode == 0

    module = doctor.toa_module_finding(signs, shim_available=True)
    assert module.status == "warn"
    assert module.summary.startswith("TOA module present (/sys/module/vtoa, /proc/net/vtoa_stats); ")
    assert "Alibaba vtoa (SLB, ALB, Anti-DDoS)" in module.summary
    assert "'no TOA' counter is rising" in module.summary
    assert "40 new connection(s) without a TOA option" in module.advice and "none with one" in module.advice
    assert "/proc/net/vtoa_stats:" in module.details
    assert module.data["modules"] == ["vtoa"] and module.data["v6vtoa_info_mode"] == 0

    probe = doctor.toa_probe_finding(ENOPROTOOPT, signs)
    assert probe.status == "warn"
    assert "a module named vtoa is loaded but does not answer the NAT64 lookup" in probe.summary
    assert probe.summary.endswith("IPv6 clients come through its option 249 instead (V6VTOA), which realip reads")
    (profile,) = probe.data["profiles"]
    assert profile["interfaces"] == ["rewritten-peer", "v6vtoa"]
    assert profile["listener"].startswith("AF_INET (0.0.0.0)")
    assert "kernel's TCP table" in profile["trust"] and "249" in profile["trust"]
    text = doctor.render_text(doctor.Report([module, probe], probes=True))
    assert "vtoa: Alibaba vtoa (SLB, ALB, Anti-DDoS); interfaces: rewritten-peer, v6vtoa" in text
    assert "  listen on AF_INET (0.0.0.0)" in text


@pytest.mark.parametrize(
    ("counters", "probe", "vendors", "interfaces"),
    [
        (HUAWEI_IPV6, EINVAL, "Huawei elb-toa branch IPv6, dpvs kmod/toa", ["lookup", "rewritten-peer"]),
        (IPV4_ONLY, ENOPROTOOPT, "Huawei elb-toa branch master, UCloud", ["rewritten-peer"]),
    ],
    ids=["lookup-build", "rewriting-build"],
)
def test_a_module_named_toa_is_told_apart_by_the_live_lookup(
    tmp_path: Path, counters: dict[str, tuple[int, int]], probe: TOAAnswer, vendors: str, interfaces: list[str]
) -> None:
    root = make_root(
        tmp_path,
        {"proc/modules": "toa 16384 0 - Live 0x0 (OE)\n", "proc/net/toa_stats": stats(counters)},
        dirs=("sys/module/toa",),
    )
    signs = doctor.read_module_signs(root, sleep=lambda seconds: None)  # counters steady: nothing rises
    assert signs == ModuleSigns(sys_module=True, proc_modules=True, toa_stats=stats(counters).rstrip())
    assert signs.modules == ("toa",) and signs.rising == {"toa_stats": {}}
    module = doctor.toa_module_finding(signs, shim_available=True)
    assert module.status == "info"
    assert module.summary == (
        'TOA module present (/sys/module/toa, "toa" in /proc/modules, /proc/net/toa_stats); '
        "realip's TOA shim is compiled"
    )
    found = doctor.toa_probe_finding(probe, signs)
    (profile,) = found.data["profiles"]
    assert vendors in profile["vendors"]
    assert profile["interfaces"] == interfaces
    assert profile["listener"].startswith("AF_INET (0.0.0.0)")
    if probe is ENOPROTOOPT:
        assert found.status == "warn" and "does not answer the NAT64 lookup" in found.summary
        assert "rewrites getpeername() instead" in found.advice
        assert "rewrites nothing on AF_INET6 sockets" in profile["listener"]  # Huawei master
    else:
        assert found.status == "ok"
        assert "believes the lookup only from toa_peers" in profile["trust"]


@pytest.mark.parametrize(
    ("name", "vendors", "interfaces"),
    [("tgw_toa", "Tencent CLB", ["rewritten-peer", "lookup"]), ("tcp_toa", "Alibaba CDN", ["rewritten-peer"])],
)
def test_other_vendors_modules_are_recognised_by_name(
    tmp_path: Path, name: str, vendors: str, interfaces: list[str]
) -> None:
    root = make_root(tmp_path, {}, dirs=(f"sys/module/{name}", "sys/module/toa_extra", "sys/module/nf_nat"))
    signs = doctor.read_module_signs(root, sleep=no_sleep)
    assert signs.modules == (name,) and signs.present
    module = doctor.toa_module_finding(signs, shim_available=False)
    assert module.summary == (
        f"TOA module present (/sys/module/{name}); {name}: {module_profile(name, None).vendors}; "
        "realip's TOA shim is NOT available"
    )
    assert vendors in module.summary
    (profile,) = doctor.toa_probe_finding(ENOPROTOOPT, signs).data["profiles"]
    assert profile["interfaces"] == interfaces


def test_no_module_reads_the_same_as_before(tmp_path: Path) -> None:
    """A host without any module: the findings the docs quote, unchanged, and no wait."""
    root = make_root(tmp_path, {"proc/modules": "toa_extra 1 0 - Live 0x0\n"})
    signs = doctor.read_module_signs(root, sleep=no_sleep)
    assert not signs.present and signs.names == ()
    module = doctor.toa_module_finding(signs, shim_available=True)
    assert module.summary == (
        'no sign of a TOA module (no /sys/module/toa, no "toa" in /proc/modules, no /proc/net/toa_stats); '
        "realip's TOA shim is compiled"
    )
    assert module.details == ()
    probe = doctor.toa_probe_finding(ENOPROTOOPT, signs)
    assert probe.data == {"status": "no-module", "errno": errno.ENOPROTOOPT, "errno_name": "ENOPROTOOPT"}
    assert probe.details == ()


def test_collect_reports_the_vendor_and_the_rising_counter(tmp_path: Path) -> None:
    """End to end through ``collect`` (its one-second second read included)."""
    root = make_root(
        tmp_path,
        {"proc/net/toa_stats": stats(IPV4_ONLY), "proc/sys/net/ipv6/bindv6only": "0\n"},
        dirs=("sys/module/toa",),
    )
    report: Any = doctor.collect(root=root, toa_probe=lambda: ENOPROTOOPT, accepts_ipv4=lambda port: None)
    by_check = {finding.check: finding for finding in report.findings}
    assert by_check["toa_module"].status == "info"  # steady counters
    assert by_check["toa_module"].data["counters"]["toa_stats"]["syn_recv_sock_toa"] == 12
    assert by_check["toa_probe"].data["profiles"][0]["interfaces"] == ["rewritten-peer"]
    assert "toa_firewall" in by_check  # a module is loaded: only the load balancer may reach the host
