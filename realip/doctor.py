"""``realip doctor``: what this host does to client addresses.

Each check is split in two: a small reader at the edge (a ``/proc`` file under a
``root`` directory, one loopback connection) and a pure function that turns what
was read into a :class:`Finding`. Tests feed the pure parts with fixture text and
point ``root`` at fixture trees; :func:`collect` wires the real edges together.

What is looked at, all read-only except two loopback probes:

- ``net.ipv6.bindv6only`` and ``net.ipv4.ip_forward``;
- signs of the TOA kernel module (``/sys/module/toa``, ``/proc/modules``,
  ``/proc/net/toa_stats``) and whether realip's compiled shim is present;
- a live TOA lookup on one loopback connection (``127.0.0.1`` to itself);
- the TCP listeners of this network namespace (``/proc/net/tcp{,6}``), their
  owning processes, and for each wildcard ``[::]`` listener whether it takes
  IPv4 clients, found by connecting to ``127.0.0.1:PORT`` and closing at once
  (skipped with ``probe=False``, ``--no-probe`` on the command line).

Nothing here raises for an unreadable file or a failed probe: it becomes a
finding that says so.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import os
import platform
import socket
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, Final, Literal

from . import __version__, toa
from .connection import DEFAULT_TOA_PEERS
from .toa import TOAAnswer, TOAStatus

__all__ = [
    "SCHEMA_VERSION",
    "Finding",
    "Listener",
    "ModuleSigns",
    "Process",
    "Report",
    "bindv6only_finding",
    "collect",
    "decode_proc_address",
    "ip_forward_finding",
    "listener_findings",
    "nat64_finding",
    "parse_proc_net_tcp",
    "probe_accepts_ipv4",
    "probe_toa",
    "read_listeners",
    "read_module_signs",
    "read_sysctl",
    "render_json",
    "render_text",
    "socket_owners",
    "toa_module_finding",
    "toa_probe_finding",
]

Status = Literal["ok", "info", "warn", "problem"]
Family = Literal["tcp", "tcp6"]
Scope = Literal["wildcard", "loopback", "mapped", "specific"]

#: Bumped when a key of the ``--json`` output changes meaning or disappears.
SCHEMA_VERSION: Final = 1

#: Connect timeout of each loopback probe (seconds); loopback answers in microseconds.
PROBE_TIMEOUT: Final = 0.5
#: At most this many ports are probed for IPv4, and for at most this long in all.
MAX_PORT_PROBES: Final = 64
PORT_PROBES_BUDGET: Final = 5.0
#: The scan of /proc/*/fd for socket owners stops after this long.
OWNER_SCAN_BUDGET: Final = 2.0
#: /proc/net/toa_stats is shown up to this many bytes.
TOA_STATS_LIMIT: Final = 4096

_LISTEN: Final = "0A"  # TCP_LISTEN in /proc/net/tcp{,6}


@dataclass(frozen=True)
class Finding:
    """One line of the report.

    ``check`` names the check (stable, see :data:`CHECKS`); ``summary`` is one
    line; ``advice`` what to do about it ("" when nothing); ``data`` the facts
    behind it, JSON-serialisable; ``details`` extra lines shown only in the
    human output (their content is also in ``data``).
    """

    check: str
    status: Status
    summary: str
    advice: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "summary": self.summary,
            "advice": self.advice,
            "data": self.data,
        }


#: Every check name, in report order, with the section it is shown under.
CHECKS: Final[dict[str, str]] = {
    "bindv6only": "Kernel settings",
    "ip_forward": "Kernel settings",
    "toa_module": "TOA module (NAT64 load balancers)",
    "toa_probe": "TOA module (NAT64 load balancers)",
    "listeners": "TCP listeners (this network namespace)",
    "listener": "TCP listeners (this network namespace)",
    "nat64": "NAT64 deployments",
}


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    probes: bool

    def to_json(self) -> dict[str, Any]:
        counts = {status: 0 for status in ("ok", "info", "warn", "problem")}
        for finding in self.findings:
            counts[finding.status] += 1
        return {
            "tool": "realip doctor",
            "schema": SCHEMA_VERSION,
            "realip": __version__,
            "platform": {
                "system": platform.system(),
                "release": platform.release(),
                "python": platform.python_version(),
            },
            "probes": self.probes,
            "counts": counts,
            "findings": [finding.to_json() for finding in self.findings],
        }


# ---- sysctls ---------------------------------------------------------------


def read_sysctl(root: Path, name: str) -> int | None:
    """The integer value of sysctl ``name`` (``net.ipv6.bindv6only``), or ``None``."""
    path = root / "proc" / "sys" / name.replace(".", "/")
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def bindv6only_finding(value: int | None) -> Finding:
    data = {"value": value}
    if value is None:
        return Finding(
            "bindv6only",
            "info",
            "net.ipv6.bindv6only is not readable (no IPv6 in this kernel, or not Linux)",
            "",
            data,
        )
    if value == 0:
        return Finding(
            "bindv6only",
            "ok",
            "net.ipv6.bindv6only = 0: [::] listeners accept IPv4 too; "
            "those clients appear as ::ffff:a.b.c.d; realip unwraps them",
            "",
            data,
        )
    return Finding(
        "bindv6only",
        "info",
        f"net.ipv6.bindv6only = {value}: [::] is IPv6-only by default; IPv4 clients need their own listener",
        "bind 0.0.0.0 too, or have the server set IPV6_V6ONLY=0 on its [::] socket",
        data,
    )


def ip_forward_finding(value: int | None) -> Finding:
    data = {"value": value}
    if value is None:
        return Finding("ip_forward", "info", "net.ipv4.ip_forward is not readable", "", data)
    if value == 0:
        return Finding(
            "ip_forward", "info", "net.ipv4.ip_forward = 0: this host does not route or NAT IPv4 for others", "", data
        )
    return Finding(
        "ip_forward",
        "info",
        "net.ipv4.ip_forward = 1: this host routes IPv4 for others (containers, VMs, a NAT gateway)",
        "apps in containers behind it see the client only if the NAT keeps the source (DNAT); "
        "where docker-proxy relays a published port (clients on loopback, IPv6 clients of an IPv4-only container) "
        "they see the bridge gateway (e.g. 172.17.0.1) instead",
        data,
    )


# ---- the TOA module ----------------------------------------------------------


@dataclass(frozen=True)
class ModuleSigns:
    """What the file system says about a TOA kernel module."""

    sys_module: bool
    proc_modules: bool
    toa_stats: str | None

    @property
    def present(self) -> bool:
        return self.sys_module or self.proc_modules or self.toa_stats is not None


def read_module_signs(root: Path) -> ModuleSigns:
    listed = False
    with contextlib.suppress(OSError), (root / "proc" / "modules").open(encoding="utf-8", errors="replace") as modules:
        listed = any(line.split(" ", 1)[0] == "toa" for line in modules)
    stats: str | None = None
    with contextlib.suppress(OSError), (root / "proc" / "net" / "toa_stats").open("rb") as f:
        stats = f.read(TOA_STATS_LIMIT).decode("utf-8", errors="replace").rstrip()
    return ModuleSigns((root / "sys" / "module" / "toa").is_dir(), listed, stats)


def toa_module_finding(signs: ModuleSigns, shim_available: bool) -> Finding:
    data = {
        "sys_module_toa": signs.sys_module,
        "proc_modules_toa": signs.proc_modules,
        "toa_stats": signs.toa_stats,
        "shim_available": shim_available,
    }
    shim = "realip's TOA shim is compiled" if shim_available else "realip's TOA shim is NOT available"
    if signs.present:
        seen = [
            text
            for flag, text in (
                (signs.sys_module, "/sys/module/toa"),
                (signs.proc_modules, '"toa" in /proc/modules'),
                (signs.toa_stats is not None, "/proc/net/toa_stats"),
            )
            if flag
        ]
        summary = f"TOA module present ({', '.join(seen)}); {shim}"
    else:
        summary = (
            f'no sign of a TOA module (no /sys/module/toa, no "toa" in /proc/modules, no /proc/net/toa_stats); {shim}'
        )
    details: tuple[str, ...] = ()
    if signs.toa_stats is not None:
        details = ("/proc/net/toa_stats:", *(f"  {line}" for line in signs.toa_stats.splitlines()))
    return Finding("toa_module", "info", summary, "", data, details)


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
    """Classify the live lookup. ``answer`` is ``None`` when the probe could not run."""
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
    if status is TOAStatus.NO_MODULE:
        if signs.present:
            return Finding(
                "toa_probe",
                "warn",
                "live probe: a module named toa is loaded but does not answer the NAT64 lookup "
                "(getsockopt IPPROTO_IP 4096: ENOPROTOOPT); NAT64 clients will appear as the load balancer",
                "it is probably an IPv4-only TOA build (IPv4 TOA still works: it rewrites getpeername()); "
                "for NAT64 use a build with the lookup (huaweicloud/elb-toa, dpvs kmod/toa)",
                data,
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
        return Finding("toa_probe", "ok", summary, "", data)
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
            f"live probe: the lookup returned a client ({_endpoint(answer.address, answer.port)}) "
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


# ---- TCP listeners -------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """One listening socket from /proc/net/tcp or /proc/net/tcp6."""

    family: Family
    address: IPv4Address | IPv6Address
    port: int
    inode: int
    uid: int = 0

    @property
    def scope(self) -> Scope:
        address = self.address
        if address.is_unspecified:
            return "wildcard"
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            return "mapped"
        if address.is_loopback:
            return "loopback"
        return "specific"

    @property
    def endpoint(self) -> str:
        return _endpoint(self.address, self.port)


def _format_address(address: IPv4Address | IPv6Address) -> str:
    # str() of a mapped IPv6Address is "::ffff:7f00:1" before Python 3.13.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _endpoint(address: IPv4Address | IPv6Address | None, port: int | None) -> str:
    if isinstance(address, IPv6Address):
        return f"[{_format_address(address)}]:{port}"
    return f"{address}:{port}"


def decode_proc_address(text: str, byteorder: str = sys.byteorder) -> IPv4Address | IPv6Address:
    """An address as /proc/net/tcp{,6} prints it: the 4 or 16 bytes in network
    order, printed as 32-bit words in *host* byte order (``%08X`` each), so on a
    little-endian host every 4-byte group is reversed: ``0100007F`` is 127.0.0.1.
    """
    raw = bytes.fromhex(text)
    if len(raw) not in (4, 16):
        raise ValueError(f"not a /proc/net/tcp address: {text!r}")
    if byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ip_address(raw)


def parse_proc_net_tcp(lines: Iterable[str], family: Family, byteorder: str = sys.byteorder) -> list[Listener]:
    """The LISTEN sockets (state ``0A``) in the text of /proc/net/tcp or tcp6.

    The header line and malformed lines are skipped. Fields: ``sl local rem st
    tx:rx tr:when retrnsmt uid timeout inode ...``.
    """
    listeners = []
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        try:
            listeners.append(
                Listener(family, decode_proc_address(address, byteorder), int(port, 16), int(fields[9]), int(fields[7]))
            )
        except ValueError:
            continue
    return listeners


def read_listeners(root: Path) -> tuple[list[Listener], list[str]]:
    """Listeners of this network namespace, and the files that could not be read."""
    listeners: list[Listener] = []
    unreadable = []
    for name, family in (("tcp", "tcp"), ("tcp6", "tcp6")):
        path = root / "proc" / "net" / name
        try:
            with path.open(encoding="ascii", errors="replace") as f:
                listeners += parse_proc_net_tcp(f, family)  # type: ignore[arg-type]
        except OSError:
            unreadable.append(str(path))
    return listeners, unreadable


@dataclass(frozen=True)
class Process:
    pid: int
    name: str


def socket_owners(inodes: Iterable[int], root: Path, *, budget: float = OWNER_SCAN_BUDGET) -> dict[int, list[Process]]:
    """Which processes hold each socket inode: /proc/PID/fd/* -> ``socket:[INODE]``.

    Best effort: processes whose fds this user cannot read are skipped, and the
    scan stops after ``budget`` seconds.
    """
    wanted = {f"socket:[{inode}]": inode for inode in inodes if inode}
    owners: dict[int, list[Process]] = {}
    if not wanted:
        return owners
    deadline = time.monotonic() + budget
    proc = root / "proc"
    try:
        pids = sorted(int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit())
    except OSError:
        return owners
    for pid in pids:
        if time.monotonic() > deadline:
            break
        found = set()
        try:
            with os.scandir(proc / str(pid) / "fd") as fds:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        inode = wanted.get(os.readlink(fd.path))
                        if inode is not None:
                            found.add(inode)
        except OSError:
            continue
        if found:
            try:
                name = (proc / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                name = "?"
            for inode in found:
                owners.setdefault(inode, []).append(Process(pid, name))
    return owners


def probe_accepts_ipv4(port: int, timeout: float = PROBE_TIMEOUT) -> bool | None:
    """Connect to 127.0.0.1:``port`` and close at once.

    True: something accepted (a dual-stack ``[::]`` listener, when no IPv4
    listener has the port); False: refused (IPv6-only); None: anything else
    (a timeout, a firewall on loopback).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return None


@dataclass
class _Group:
    """The sockets listening on one (family, address, port): several with SO_REUSEPORT."""

    family: Family
    address: IPv4Address | IPv6Address
    port: int
    scope: Scope
    inodes: list[int] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return _endpoint(self.address, self.port)


def _group(listeners: Iterable[Listener]) -> list[_Group]:
    groups: dict[tuple[str, str, int], _Group] = {}
    for listener in listeners:
        key = (listener.family, str(listener.address), listener.port)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(listener.family, listener.address, listener.port, listener.scope)
        group.inodes.append(listener.inode)
    return sorted(groups.values(), key=lambda g: (g.port, g.family, g.address.packed))


def _ipv4_served_on(groups: Iterable[_Group]) -> dict[int, list[str]]:
    """Ports on which an IPv4 connection would reach a listener other than a
    wildcard ``[::]`` one: any tcp listener, or a tcp6 one on ``::ffff:a.b.c.d``."""
    served: dict[int, list[str]] = {}
    for group in groups:
        if group.family == "tcp" or group.scope == "mapped":
            served.setdefault(group.port, []).append(group.endpoint)
    return served


def _owner_text(processes: Sequence[Process]) -> str:
    if not processes:
        return ""
    by_name: dict[str, list[int]] = {}
    for process in processes:
        by_name.setdefault(process.name, []).append(process.pid)
    parts = []
    for name, pids in by_name.items():
        shown = ", ".join(map(str, pids[:4])) + (", ..." if len(pids) > 4 else "")
        parts.append(f"{name} (pid {shown})")
    return "; ".join(parts)


_NETSTAT_ADVICE: Final = (
    "netstat/ss list this port only as tcp6, yet it serves IPv4 too: with bindv6only=0 a [::] socket takes "
    "IPv4 clients as ::ffff:a.b.c.d; realip unwraps them, other code comparing against IPv4 networks misses them"
)
_NOT_DECIDED: Final = {
    "not-probed": "not probed",
    "probe-limit": "not probed: too many ports",
    "probe-failed": "connecting to 127.0.0.1 neither succeeded nor was refused",
}
_V6ONLY_ADVICE: Final = (
    "if IPv4 clients should reach it: also listen on 0.0.0.0:{port}, or have the server clear IPV6_V6ONLY "
    "(a single-process `uvicorn --host ::` and waitress set it; gunicorn, uvicorn --workers N or --fd do not)"
)


def listener_findings(
    listeners: Iterable[Listener],
    *,
    bindv6only: int | None,
    accepts_ipv4: Callable[[int], bool | None] | None,
    owners: dict[int, list[Process]] | None = None,
    max_probes: int = MAX_PORT_PROBES,
    probe_budget: float = PORT_PROBES_BUDGET,
) -> list[Finding]:
    """One finding per listening (family, address, port).

    ``accepts_ipv4(port)`` probes a wildcard tcp6 port (see
    :func:`probe_accepts_ipv4`); ``None`` skips probing. It is only called for
    ports that no IPv4 listener shares, since a connection to 127.0.0.1 would
    reach that one instead.
    """
    owners = owners or {}
    groups = _group(listeners)
    if not groups:
        return [
            Finding(
                "listeners",
                "info",
                "no TCP listeners in this network namespace",
                "run `realip doctor` where the app runs (inside its container), while it runs",
                {"count": 0},
            )
        ]
    served = _ipv4_served_on(groups)
    column = min(max(len(group.endpoint) for group in groups), 30)  # lines up the human output
    probed: dict[int, bool | None] = {}
    deadline = time.monotonic() + probe_budget
    findings = []
    for group in groups:
        processes = [p for inode in group.inodes for p in owners.get(inode, [])]
        data: dict[str, Any] = {
            "family": group.family,
            "address": _format_address(group.address),
            "port": group.port,
            "scope": group.scope,
            "inodes": group.inodes,
            "processes": [{"pid": p.pid, "name": p.name} for p in processes],
        }
        status: Status = "ok"
        advice = ""
        if group.family == "tcp":
            description = {
                "wildcard": "all IPv4 addresses; peers are plain IPv4",
                "loopback": "loopback only: reachable from this host only",
                "specific": f"IPv4 address {group.address} only; peers are plain IPv4",
            }[group.scope]
            if group.scope == "loopback":
                status = "info"
                advice = "a local reverse proxy in front? its address is the peer: trust it for forwarding headers"
        elif group.scope == "loopback":
            description = "IPv6 loopback only: reachable from this host only"
            status = "info"
            advice = "a local reverse proxy in front? its address is the peer: trust it for forwarding headers"
        elif group.scope == "mapped":
            description = "an IPv4 address through an AF_INET6 socket: peers appear as ::ffff:a.b.c.d (realip unwraps)"
        elif group.scope == "specific":
            description = "one IPv6 address only; IPv4 clients cannot reach it"
        else:
            accepts, via = _wildcard_accepts_ipv4(group.port, served, probed, accepts_ipv4, max_probes, deadline)
            data["accepts_ipv4"] = accepts
            data["ipv4_decided_by"] = via
            if via == "tcp4-listener":
                data["ipv4_listeners"] = served[group.port]
                description = f"IPv6 clients; IPv4 clients reach {', '.join(served[group.port])} instead"
            elif accepts is True:
                description = "dual-stack: IPv4 clients appear as ::ffff:a.b.c.d (realip unwraps them)"
                status = "info"
                advice = _NETSTAT_ADVICE
            elif accepts is False:
                description = "IPv6 only (IPV6_V6ONLY): IPv4 clients are refused on this port"
                status = "warn"
                advice = _V6ONLY_ADVICE.format(port=group.port)
            else:
                status = "info"
                reason = _NOT_DECIDED[via]
                if bindv6only == 1:
                    description = f"IPv6 only unless the server cleared IPV6_V6ONLY ({reason})"
                else:
                    description = f"dual-stack unless the server set IPV6_V6ONLY ({reason})"
                    advice = _NETSTAT_ADVICE
        owner = _owner_text(processes)
        summary = f"{group.family:<4}  {group.endpoint:<{column}}  {description}" + (f"  [{owner}]" if owner else "")
        findings.append(Finding("listener", status, summary, advice, data))
    return findings


def _wildcard_accepts_ipv4(
    port: int,
    served: dict[int, list[str]],
    probed: dict[int, bool | None],
    accepts_ipv4: Callable[[int], bool | None] | None,
    max_probes: int,
    deadline: float,
) -> tuple[bool | None, str]:
    """Whether a wildcard tcp6 listener on ``port`` takes IPv4, and how that was decided."""
    if port in served:
        return None, "tcp4-listener"
    if accepts_ipv4 is None:
        return None, "not-probed"
    if port not in probed:
        if len(probed) >= max_probes or time.monotonic() > deadline:
            return None, "probe-limit"
        probed[port] = accepts_ipv4(port)
    result = probed[port]
    return result, "probe" if result is not None else "probe-failed"


# ---- NAT64 ---------------------------------------------------------------------------


def _takes_outside_clients_on_af_inet6(listener: Listener) -> bool:
    """An AF_INET6 listener that a load balancer could reach (not ::1, not ::ffff:127.x)."""
    if listener.family != "tcp6":
        return False
    address = listener.address
    mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    return not (address.is_loopback or (mapped is not None and mapped.is_loopback))


def nat64_finding(
    module_loaded: bool, listeners: Iterable[Listener], toa_peers: Sequence[str] = DEFAULT_TOA_PEERS
) -> Finding:
    """Where to listen behind NAT64 + TOA (see ``toa-abi.md``, "Who may send the option").

    On an AF_INET6 listener the module rewrites ``getpeername()`` itself, so no
    user-space code can check who sent the option; on an AF_INET listener the
    peer stays the load balancer and realip checks it against ``toa_peers``.
    """
    exposed = sorted({listener.endpoint for listener in listeners if _takes_outside_clients_on_af_inet6(listener)})
    peers = ", ".join(toa_peers)
    advice = (
        "behind NAT64 + TOA listen on 0.0.0.0 (AF_INET) and let a security group or firewall admit only the load "
        f"balancer (realip trusts {peers} by default: shared Huawei ELB; a dedicated ELB connects from the backend "
        "subnet: name it in toa_peers); on an AF_INET6 listener the module rewrites getpeername() and user space "
        "cannot check who sent the option"
    )
    data = {"module_loaded": module_loaded, "af_inet6_listeners": exposed, "toa_peers": list(toa_peers)}
    if module_loaded and exposed:
        shown = ", ".join(exposed[:6]) + (", ..." if len(exposed) > 6 else "")
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


# ---- everything ------------------------------------------------------------------------


def collect(
    *,
    root: Path = Path("/"),
    probes: bool = True,
    toa_probe: Callable[[], TOAAnswer] = probe_toa,
    accepts_ipv4: Callable[[int], bool | None] = probe_accepts_ipv4,
    owner_budget: float = OWNER_SCAN_BUDGET,
) -> Report:
    """Run every check. ``probes=False`` skips the IPv4 connects to other
    processes' ``[::]`` listeners; the TOA probe only talks to itself and always runs."""
    bindv6only = read_sysctl(root, "net.ipv6.bindv6only")
    findings = [bindv6only_finding(bindv6only), ip_forward_finding(read_sysctl(root, "net.ipv4.ip_forward"))]

    signs = read_module_signs(root)
    findings.append(toa_module_finding(signs, toa.available()))
    try:
        answer: TOAAnswer | None = toa_probe()
        setup_error = None
    except OSError as exc:
        answer, setup_error = None, f"{type(exc).__name__}: {exc}"
    findings.append(toa_probe_finding(answer, signs, setup_error=setup_error))
    module_loaded = signs.present or (answer is not None and answer.status in (TOAStatus.NONE, TOAStatus.FOUND))

    listeners, unreadable = read_listeners(root)
    if unreadable:
        findings.append(
            Finding("listeners", "info", f"could not read {', '.join(unreadable)}", "", {"unreadable": unreadable})
        )
    owners = socket_owners({listener.inode for listener in listeners}, root, budget=owner_budget)
    findings += listener_findings(
        listeners, bindv6only=bindv6only, accepts_ipv4=accepts_ipv4 if probes else None, owners=owners
    )
    if listeners and not owners and os.geteuid() != 0:
        findings.append(
            Finding("listeners", "info", "owning processes not visible", "run as root to name other users' processes")
        )
    findings.append(nat64_finding(module_loaded, listeners))
    return Report(findings, probes)


# ---- output ----------------------------------------------------------------------------

_LABELS: Final = {"ok": "ok", "info": "info", "warn": "WARN", "problem": "PROBLEM"}
_COLOURS: Final = {"ok": "32", "info": "2", "warn": "33", "problem": "1;31"}


def render_json(report: Report) -> dict[str, Any]:
    return report.to_json()


def render_text(report: Report, *, colour: bool = False, width: int = 100) -> str:
    """The human report: a section per topic, a line per finding, "→" advice below."""
    lines = [f"realip doctor {__version__}: what this host does to client addresses"]
    section = None
    for finding in report.findings:
        title = CHECKS.get(finding.check, "Other")
        if title != section:
            section = title
            lines += ["", title]
        label = f"{_LABELS[finding.status]:<7}"
        if colour:
            label = f"\033[{_COLOURS[finding.status]}m{label}\033[0m"
        lines.append(f"  {label} {finding.summary}")
        lines += [f"          {detail}" for detail in finding.details]
        if finding.advice:
            lines += textwrap.wrap(
                finding.advice, width=width, initial_indent="          → ", subsequent_indent="            "
            )
    counts = report.to_json()["counts"]
    problems, warnings = counts["problem"], counts["warn"]
    totals = (
        f"{problems} problem{'s' * (problems != 1)}, {warnings} warning{'s' * (warnings != 1)}, "
        f"{counts['info']} info, {counts['ok']} ok"
    )
    lines += ["", f"Summary: {totals}"]
    if not report.probes:
        lines.append("(--no-probe: [::] listeners were not checked for IPv4)")
    return "\n".join(lines) + "\n"
