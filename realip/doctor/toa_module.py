"""The TOA kernel modules (layer-4 load balancers): signs of them in ``/sys`` and
``/proc``, which vendor's module this is and which interface it offers, its
counters, a live lookup on one loopback connection, and where to listen and
whom to let in when one is loaded.

The modules' interfaces and their hazards are described in ``docs/toa-module.md``
and, vendor by vendor, in ``docs/vendors/index.md``.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, Final

from .. import toa
from ..connection import DEFAULT_TOA_PEERS
from ..toa import MODULE_NAMES, TOAAnswer, TOAStatus
from .listeners import Listener, Process, reverse_proxy_name
from .model import Finding, endpoint

__all__ = [
    "COUNTER_FILES",
    "TOA_STATS_LIMIT",
    "ModuleProfile",
    "ModuleSigns",
    "module_profile",
    "nat64_finding",
    "parse_counters",
    "probe_toa",
    "read_module_signs",
    "toa_firewall_finding",
    "toa_module_finding",
    "toa_probe_finding",
]

#: /proc/net/toa_stats (and vtoa_stats) are shown up to this many bytes.
TOA_STATS_LIMIT: Final = 4096

#: The counters the modules keep, by file under /proc/net: ``toa_stats`` (Huawei
#: ``elb-toa`` both branches, dpvs, UCloud, LVS FULLNAT), ``vtoa_stats`` (Alibaba).
COUNTER_FILES: Final = ("toa_stats", "vtoa_stats")

#: Seconds between the two reads of the counters that tell a rising "no TOA" count.
COUNTER_INTERVAL: Final = 1.0


@dataclass(frozen=True)
class ModuleSigns:
    """What the file system says about the TOA kernel modules.

    The first three fields are about the module named ``toa``; ``modules`` names
    every TOA module found (:data:`realip.toa.MODULE_NAMES`, in ``/sys/module``
    or ``/proc/modules``), ``counters`` the totals of each counters file (summed
    over CPUs), ``rising`` how much each counter grew between two reads a
    second apart (read only when a "no TOA" counter exists), ``vtoa_stats`` and
    ``v6vtoa_info_mode`` what Alibaba's vtoa shows. Equality looks at the first three only.
    """

    sys_module: bool
    proc_modules: bool
    toa_stats: str | None
    modules: tuple[str, ...] = field(default=(), compare=False)
    vtoa_stats: str | None = field(default=None, compare=False)
    counters: Mapping[str, Mapping[str, int]] = field(default_factory=dict, compare=False)
    rising: Mapping[str, Mapping[str, int]] = field(default_factory=dict, compare=False)
    v6vtoa_info_mode: int | None = field(default=None, compare=False)

    @property
    def present(self) -> bool:
        return (
            self.sys_module
            or self.proc_modules
            or self.toa_stats is not None
            or bool(self.modules)
            or self.vtoa_stats is not None
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The modules loaded: ``modules``, or ``("toa",)`` from its older signs alone."""
        if self.modules:
            return self.modules
        legacy = self.sys_module or self.proc_modules or self.toa_stats is not None
        return ("toa",) if legacy else (("vtoa",) if self.vtoa_stats is not None else ())


def parse_counters(text: str) -> dict[str, int]:
    """``{counter: total}`` from a module's counters file: ``name: v1 v2 ...`` per line,
    one value per online CPU (summed), after a header of CPU names. Lines that are
    not a name and numbers are skipped."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, colon, rest = line.partition(":")
        words = rest.split() if colon else name.split()[1:]
        name = name.strip() if colon else (name.split() or [""])[0]
        if name and words and all(word.isdigit() for word in words):
            found[name] = sum(int(word) for word in words)
    return found


def _read_text(path: Path) -> str | None:
    with contextlib.suppress(OSError), path.open("rb") as f:
        return f.read(TOA_STATS_LIMIT).decode("utf-8", errors="replace").rstrip()
    return None


def read_module_signs(
    root: Path, *, interval: float = COUNTER_INTERVAL, sleep: Callable[[float], None] = time.sleep
) -> ModuleSigns:
    """``/sys/module/{toa,vtoa,tcp_toa,tgw_toa}``, those names in ``/proc/modules``,
    ``/proc/net/toa_stats`` and ``vtoa_stats``, and vtoa's sysctl. When a counters
    file has a "no TOA" counter, it is read again ``interval`` seconds later
    (``sleep`` waits) to tell whether that counter rises."""
    listed: set[str] = set()
    with contextlib.suppress(OSError), (root / "proc" / "modules").open(encoding="utf-8", errors="replace") as modules:
        listed = {line.split(" ", 1)[0] for line in modules} & set(MODULE_NAMES)
    in_sys = {name for name in MODULE_NAMES if (root / "sys" / "module" / name).is_dir()}
    texts = {name: _read_text(root / "proc" / "net" / name) for name in COUNTER_FILES}
    counters = {name: parse_counters(text) for name, text in texts.items() if text is not None}
    rising: dict[str, dict[str, int]] = {}
    if any("no_toa" in counter for values in counters.values() for counter in values):
        sleep(interval)
        for name in counters:
            later = _read_text(root / "proc" / "net" / name)
            if later is not None:
                after = parse_counters(later)
                rising[name] = {k: after[k] - v for k, v in counters[name].items() if after.get(k, v) > v}
    mode: int | None = None
    with contextlib.suppress(OSError, ValueError):
        mode = int((root / "proc" / "sys" / "net" / "ipv4" / "slb_vtoa" / "v6vtoa_info_mode").read_text().strip())
    return ModuleSigns(
        "toa" in in_sys,
        "toa" in listed,
        texts["toa_stats"],
        tuple(name for name in MODULE_NAMES if name in in_sys | listed),
        texts["vtoa_stats"],
        counters,
        rising,
        mode,
    )


@dataclass(frozen=True)
class ModuleProfile:
    """What one loaded module is, by its name and the live lookup's answer
    (``docs/vendors/index.md``): whose it is, the interfaces it offers
    (:class:`realip.toa.TOAInterface` values), what realip can check, and the
    listener family to use."""

    name: str
    vendors: str
    interfaces: tuple[str, ...]
    trust: str
    listener: str


_TABLE_CHECK: Final = (
    "realip finds who really connected in the kernel's TCP table (one sock_diag dump per new connection) "
    "and counts the client as vouched for only when that peer is in toa_peers; the rewritten address is "
    "never a trusted proxy"
)


def module_profile(name: str, answer: TOAAnswer | None) -> ModuleProfile:
    """The profile of module ``name``; for ``toa`` the live lookup tells the builds apart."""
    if name == "vtoa":
        return ModuleProfile(
            name,
            "Alibaba vtoa (SLB, ALB, Anti-DDoS)",
            ("rewritten-peer", "v6vtoa"),
            f"getpeername() shows the client; {_TABLE_CHECK}; with option 249 an AF_INET socket reports a "
            "28-byte IPv6 peer that Python servers truncate, and realip reads it whole; the virtual server "
            "(getsockopt 1345..1347) names the VIP, not the sender",
            "AF_INET (0.0.0.0): vtoa honours its VPC option (252) only there, and realip repairs the IPv6 "
            "clients of option 249 on it (the server's own access log shows them garbled)",
        )
    if name == "tgw_toa":
        return ModuleProfile(
            name,
            "Tencent CLB (tgw_toa)",
            ("rewritten-peer", "lookup"),
            f"IPv4 clients: getpeername() shows the client, {_TABLE_CHECK}; NAT64 clients: the 4096 lookup, "
            "believed only from toa_peers",
            "AF_INET (0.0.0.0): the load balancer stays the socket peer for NAT64 clients",
        )
    if name == "tcp_toa":
        return ModuleProfile(
            name,
            "Alibaba CDN (tcp_toa)",
            ("rewritten-peer",),
            f"getpeername() shows the client; {_TABLE_CHECK}",
            "either family: the peer is rewritten on both, and only the kernel's table keeps the load balancer",
        )
    lookup = answer is not None and (
        answer.status is TOAStatus.FOUND or (answer.status is TOAStatus.NONE and answer.errno == errno_module.EINVAL)
    )
    if lookup:
        return ModuleProfile(
            name,
            "toa with the NAT64 lookup (Huawei elb-toa branch IPv6, dpvs kmod/toa)",
            ("lookup", "rewritten-peer"),
            "NAT64 on AF_INET: the load balancer stays the socket peer and realip believes the lookup only from "
            f"toa_peers; IPv4 TOA, and NAT64 on AF_INET6: getpeername() is rewritten (EFAULT), {_TABLE_CHECK}",
            "AF_INET (0.0.0.0): the only family on which the load balancer stays visible to every program",
        )
    return ModuleProfile(
        name,
        "toa without the lookup (Huawei elb-toa branch master, UCloud ucloud-toa, LVS FULLNAT)",
        ("rewritten-peer",),
        f"getpeername() shows the client (IPv4 TOA only: no NAT64); {_TABLE_CHECK}",
        "AF_INET (0.0.0.0): Huawei's master build rewrites nothing on AF_INET6 sockets, so a [::] server "
        "would see the load balancer",
    )


def _counter_lines(signs: ModuleSigns) -> tuple[str, ...]:
    lines: list[str] = []
    for name in COUNTER_FILES:
        text = signs.toa_stats if name == "toa_stats" else signs.vtoa_stats
        if text is not None:
            lines += [f"/proc/net/{name}:", *(f"  {line}" for line in text.splitlines())]
    return tuple(lines)


def _rising_no_toa(signs: ModuleSigns) -> list[str]:
    """One sentence per counters file whose "no TOA" count rose between the two reads."""
    said = []
    for name, grew in signs.rising.items():
        no_toa = sum(v for k, v in grew.items() if "no_toa" in k)
        if no_toa <= 0:
            continue
        with_toa = sum(v for k, v in grew.items() if "toa" in k and "no_toa" not in k and k.startswith("syn_recv"))
        said.append(
            f"/proc/net/{name}: {no_toa} new connection(s) without a TOA option the module parses between two "
            "reads a second apart" + (f" (and {with_toa} with one)" if with_toa else ", and none with one")
        )
    return said


def toa_module_finding(signs: ModuleSigns, shim_available: bool) -> Finding:
    """Which modules were seen and whose they are, their counters (a rising "no TOA"
    count is a warning), and whether realip's compiled shim can ask them."""
    data: dict[str, Any] = {
        "sys_module_toa": signs.sys_module,
        "proc_modules_toa": signs.proc_modules,
        "toa_stats": signs.toa_stats,
        "shim_available": shim_available,
        "modules": list(signs.names),
        "vtoa_stats": signs.vtoa_stats,
        "counters": {name: dict(values) for name, values in signs.counters.items()},
        "rising": {name: dict(values) for name, values in signs.rising.items()},
        "v6vtoa_info_mode": signs.v6vtoa_info_mode,
    }
    shim = "realip's TOA shim is compiled" if shim_available else "realip's TOA shim is NOT available"
    if not signs.present:
        summary = (
            f'no sign of a TOA module (no /sys/module/toa, no "toa" in /proc/modules, no /proc/net/toa_stats); {shim}'
        )
        return Finding("toa_module", "info", summary, "", data)
    seen = [
        text
        for flag, text in (
            (signs.sys_module, "/sys/module/toa"),
            (signs.proc_modules, '"toa" in /proc/modules'),
            (signs.toa_stats is not None, "/proc/net/toa_stats"),
        )
        if flag
    ]
    seen += [f"/sys/module/{name}" for name in signs.modules if name != "toa"]
    seen += ["/proc/net/vtoa_stats"] if signs.vtoa_stats is not None else []
    whose = "; ".join(f"{name}: {module_profile(name, None).vendors}" for name in signs.names if name != "toa")
    summary = f"TOA module present ({', '.join(seen)}){'; ' + whose if whose else ''}; {shim}"
    rising = _rising_no_toa(signs)
    details = _counter_lines(signs)
    if not rising:
        return Finding("toa_module", "info", summary, "", data, details)
    return Finding(
        "toa_module",
        "warn",
        f"{summary}; the 'no TOA' counter is rising",
        "; ".join(rising) + ": the load balancer sends an option kind this module does not parse (Tencent and "
        "UCloud use 200, Huawei and Alibaba 254, Alibaba's IPv6 mode 249), does not add TOA at all, or these "
        "connections do not come from it (health checks, direct clients); Alibaba vtoa also counts a lone "
        "254/8 here although it rewrites the peer; see docs/toa-module.md#connections-loading-and-unloading",
        data,
        details,
    )


def probe_toa(timeout: float = 2.0) -> TOAAnswer:
    """One TOA lookup on a fresh loopback connection (AF_INET, 127.0.0.1 to itself).

    Every socket is closed before returning; :class:`OSError` from setting up
    the connection propagates.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.settimeout(timeout)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        stack.enter_context(socket.create_connection(listener.getsockname()[:2], timeout=timeout))
        accepted, _ = listener.accept()
        stack.enter_context(accepted)
        return toa.lookup(accepted)


def _errno_name(number: int) -> str:
    return errno_module.errorcode.get(number, str(number))


_LOAD_MODULE_ADVICE: Final = (
    "this matters only behind a NAT64 load balancer (Huawei Cloud ELB with IPv6, dpvs, LVS FULLNAT): "
    "load the vendor's TOA module on the host (containers share the host kernel); "
    "it affects connections accepted after it is loaded"
)


def toa_probe_finding(answer: TOAAnswer | None, signs: ModuleSigns, *, setup_error: str | None = None) -> Finding:
    """Classify the live lookup. ``answer`` is ``None`` when the probe could not run.

    A loopback connection carries no TCP option, so a module that answers
    ``EINVAL`` is loaded and working; ``ENOPROTOOPT`` means no module (or one
    without the NAT64 lookup); anything else is odd and said so. Where ``signs``
    show a module, the finding also says whose it is, which interfaces it offers,
    what realip can check there and which listener family to use
    (:func:`module_profile`: ``data["profiles"]``, and the details).
    """
    if answer is None:
        return Finding(
            "toa_probe",
            "warn",
            f"live probe: could not open a loopback connection ({setup_error})",
            "check that the loopback interface (127.0.0.1) is up in this network namespace",
            {"status": None, "errno": None, "error": setup_error},
        )
    data: dict[str, Any] = {
        "status": answer.status.value,
        "errno": answer.errno,
        "errno_name": _errno_name(answer.errno) if answer.errno else None,
    }
    status = answer.status
    if signs.present:
        profiles = [module_profile(name, answer) for name in signs.names]
        data["profiles"] = [
            {"module": p.name, "vendors": p.vendors, "interfaces": list(p.interfaces), "trust": p.trust,
             "listener": p.listener}
            for p in profiles
        ]  # fmt: skip
        details = tuple(
            line
            for p in profiles
            for line in (
                f"{p.name}: {p.vendors}; interfaces: {', '.join(p.interfaces)}",
                f"  what realip can check: {p.trust}",
                f"  listen on {p.listener}",
            )
        )
    else:
        details = ()
    if status is TOAStatus.NO_MODULE:
        if signs.present:
            names = ", ".join(signs.names) or "toa"
            consequence = (
                "IPv6 clients come through its option 249 instead (V6VTOA), which realip reads"
                if "vtoa" in signs.names
                else "NAT64 clients will appear as the load balancer"
            )
            return Finding(
                "toa_probe",
                "warn",
                f"live probe: a module named {names} is loaded but does not answer the NAT64 lookup "
                f"(getsockopt IPPROTO_IP 4096: ENOPROTOOPT); {consequence}",
                "it rewrites getpeername() instead (an IPv4 TOA build: Huawei elb-toa master, UCloud, LVS FULLNAT; "
                "or Alibaba vtoa), which realip checks against the kernel's TCP table; for NAT64 to an AF_INET "
                "listener use a build with the lookup (huaweicloud/elb-toa branch IPv6, dpvs kmod/toa); "
                "see docs/toa-module.md#other-vendors-modules",
                data,
                details,
            )
        return Finding(
            "toa_probe",
            "info",
            "live probe: no TOA module loaded: NAT64 clients will appear as the load balancer (100.125.x.x)",
            _LOAD_MODULE_ADVICE,
            data,
        )
    if status is TOAStatus.NONE and answer.errno != errno_module.EFAULT:
        summary = "live probe: module loaded and answering (this loopback connection carried no option, as expected)"
        if not signs.present:
            summary += "; no /sys/module/toa here (a container, or an emulator)"
        return Finding("toa_probe", "ok", summary, "", data, details)
    if status is TOAStatus.NONE:  # EFAULT: the module claims to have rewritten getpeername() of a loopback connection
        return Finding(
            "toa_probe",
            "warn",
            "live probe: the module says it rewrote the peer of a plain loopback connection (EFAULT): odd",
            "something on this host adds TOA options to local connections; find out what before trusting TOA",
            data,
        )
    if status is TOAStatus.FOUND:
        data.update(address=str(answer.address), port=answer.port)
        return Finding(
            "toa_probe",
            "warn",
            f"live probe: the lookup returned a client ({endpoint(answer.address, answer.port)}) "
            "for a plain loopback connection: odd",
            "something answers getsockopt(IPPROTO_IP, 4096) for connections that carried no option "
            "(check LD_PRELOAD and the loaded modules); do not trust TOA answers until explained",
            data,
        )
    if status is TOAStatus.UNAVAILABLE:
        if not sys.platform.startswith("linux"):
            return Finding("toa_probe", "info", "live probe: not Linux, there is no TOA module to ask", "", data)
        return Finding(
            "toa_probe",
            "warn",
            "live probe: realip's TOA shim is not compiled, so realip cannot ask the module",
            "install a realip wheel for this platform, or reinstall with a C compiler available "
            "(pip install --force-reinstall --no-binary realip realip; in a checkout: pip install -e .)",
            data,
        )
    return Finding(
        "toa_probe",
        "warn",
        f"live probe: unexpected answer from the TOA lookup: {data['errno_name']} ({answer.errno})",
        "realip treats it as 'no client' and never fails a request on it, but NAT64 clients are not recovered; "
        "report it with the kernel version and the module's source",
        data,
    )


def _takes_outside_clients_on_af_inet6(listener: Listener) -> bool:
    """An AF_INET6 listener that a load balancer could reach (not ::1, not ::ffff:127.x)."""
    if listener.family != "tcp6":
        return False
    address = listener.address
    mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    return not (address.is_loopback or (mapped is not None and mapped.is_loopback))


def nat64_finding(
    module_loaded: bool,
    listeners: Iterable[Listener],
    toa_peers: Sequence[str] = DEFAULT_TOA_PEERS,
    *,
    owners: Mapping[int, list[Process]] | None = None,
) -> Finding:
    """Where to listen behind NAT64 + TOA (``docs/toa-module.md``, "Who may send the option").

    On an AF_INET6 listener the module rewrites ``getpeername()`` itself, so no
    user-space code can check who sent the option; on an AF_INET listener the
    peer stays the load balancer and realip checks it against ``toa_peers``.
    A reverse proxy's own AF_INET6 listener (``owners``) is left out: the
    rewritten peer is how the proxy learns the client, and only the firewall
    protects it.
    """
    owners = owners or {}
    exposed: set[str] = set()
    proxied: set[str] = set()
    for listener in listeners:
        if _takes_outside_clients_on_af_inet6(listener):
            is_proxy = reverse_proxy_name(owners.get(listener.inode, [])) is not None
            (proxied if is_proxy else exposed).add(listener.endpoint)
    peers = ", ".join(toa_peers)
    advice = (
        "behind NAT64 + TOA listen on 0.0.0.0 (AF_INET) and let a security group or firewall admit only the load "
        f"balancer (realip trusts {peers} by default: shared Huawei ELB; a dedicated ELB connects from the backend "
        "subnet: name it in toa_peers); on an AF_INET6 listener the module rewrites getpeername() and user space "
        "cannot check who sent the option; see docs/toa.md#3-listen-on-ipv4-0000-not-"
    )
    data = {
        "module_loaded": module_loaded,
        "af_inet6_listeners": sorted(exposed),
        "reverse_proxy_af_inet6_listeners": sorted(proxied),
        "toa_peers": list(toa_peers),
    }
    if module_loaded and exposed:
        shown = ", ".join(sorted(exposed)[:6]) + (", ..." if len(exposed) > 6 else "")
        return Finding(
            "nat64",
            "warn",
            f"TOA module loaded and AF_INET6 listeners take outside clients ({shown}): there, any client that "
            "reaches this host directly can claim an address",
            advice,
            data,
        )
    if module_loaded:
        return Finding(
            "nat64",
            "ok",
            "TOA module loaded and no AF_INET6 listener takes outside clients: realip can check the load balancer",
            advice,
            data,
        )
    return Finding("nat64", "info", "if this host is put behind a NAT64 load balancer:", advice, data)


def toa_firewall_finding(toa_peers: Sequence[str] = DEFAULT_TOA_PEERS) -> Finding:
    """With a TOA module loaded: only the load balancer may reach this host's ports.

    The module takes the TCP option from any sender, and one crafted
    handshake crashes the kernel with Huawei's ``IPv6`` build. Nothing on the
    host can tell whether a firewall is in place, so this is always a warning.
    """
    peers = ", ".join(toa_peers)
    return Finding(
        "toa_firewall",
        "warn",
        "TOA module loaded: only the load balancer may reach the ports of this host; "
        "let nothing else through the security group or firewall",
        "the module believes a TOA option from any sender, and with Huawei's elb-toa IPv6 build one crafted "
        "handshake (a NAT64 option followed by an IPv4 TOA option in the ACK, sent to an AF_INET listener) "
        f"panics the kernel; admit only the load balancer ({peers} for a shared Huawei ELB, the backend subnet "
        "for a dedicated one); see docs/toa.md#2-let-only-the-load-balancer-in",
        {"toa_peers": list(toa_peers)},
    )
