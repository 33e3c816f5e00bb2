"""The TCP listeners of this network namespace, and what each one reports as
the peer.

Read from ``/proc/net/tcp`` and ``/proc/net/tcp6``; each socket's owner from
``/proc/PID/fd``. A wildcard ``[::]`` listener is checked for IPv4 by
connecting to ``127.0.0.1:PORT`` and closing at once. A listener owned by a
reverse proxy (nginx, HAProxy, ...) is the proxy's own front door: it is named
as such, never flagged.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, Final, Literal

from .model import Finding, Status, endpoint, format_address

__all__ = [
    "MAX_PORT_PROBES",
    "OWNER_SCAN_BUDGET",
    "PORT_PROBES_BUDGET",
    "PROBE_TIMEOUT",
    "REVERSE_PROXIES",
    "Family",
    "Listener",
    "Process",
    "Scope",
    "decode_proc_address",
    "listener_findings",
    "parse_proc_net_tcp",
    "probe_accepts_ipv4",
    "read_listeners",
    "reverse_proxy_name",
    "socket_owners",
]

Family = Literal["tcp", "tcp6"]
Scope = Literal["wildcard", "loopback", "mapped", "specific"]

#: Connect timeout of each loopback probe (seconds); loopback answers in microseconds.
PROBE_TIMEOUT: Final = 0.5
#: At most this many ports are probed for IPv4, and for at most this long in all.
MAX_PORT_PROBES: Final = 64
PORT_PROBES_BUDGET: Final = 5.0
#: The scan of ``/proc/*/fd`` for socket owners stops after this long.
OWNER_SCAN_BUDGET: Final = 2.0

#: Process names (``/proc/PID/comm``) of reverse proxies: their listeners are
#: the front door of an app behind them, not the app's own.
REVERSE_PROXIES: Final = frozenset({"nginx", "haproxy", "apache2", "httpd", "squid", "envoy", "caddy", "traefik"})

_LISTEN: Final = "0A"  # TCP_LISTEN in /proc/net/tcp{,6}


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
        return endpoint(self.address, self.port)


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


def reverse_proxy_name(processes: Iterable[Process]) -> str | None:
    """The name of the reverse proxy among a socket's owners, if one is."""
    return next((process.name for process in processes if process.name in REVERSE_PROXIES), None)


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
        return endpoint(self.address, self.port)


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
_LOCAL_PROXY_ADVICE: Final = "a local reverse proxy in front? its address is the peer: trust it for forwarding headers"
_REVERSE_PROXY_ADVICE: Final = (
    "the app behind it sees the proxy as the peer: trust the address the proxy connects from "
    "(127.0.0.1 and ::1 on this host) with trusted_proxies or REALIP_TRUSTED_PROXIES; "
    "see docs/proxies.md"
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
    reach that one instead. A listener whose owner is a reverse proxy
    (:data:`REVERSE_PROXIES`) is reported as ``info``, whatever its family:
    ``data["reverse_proxy"]`` names the proxy.
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
    probed: dict[int, bool | None] = {}
    deadline = time.monotonic() + probe_budget
    findings = []
    for group in groups:
        processes = [p for inode in group.inodes for p in owners.get(inode, [])]
        data: dict[str, Any] = {
            "family": group.family,
            "address": format_address(group.address),
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
                advice = _LOCAL_PROXY_ADVICE
        elif group.scope == "loopback":
            description = "IPv6 loopback only: reachable from this host only"
            status = "info"
            advice = _LOCAL_PROXY_ADVICE
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
        owned = f" [{owner}]" if owner else ""
        proxy = reverse_proxy_name(processes)
        if proxy is not None:
            data["reverse_proxy"] = proxy
            summary = f"{proxy} listens on {group.endpoint}: a reverse proxy in front of the app{owned}"
            findings.append(Finding("listener", "info", summary, _REVERSE_PROXY_ADVICE, data))
            continue
        summary = f"{group.family} {group.endpoint} {description}{owned}"
        findings.append(Finding("listener", status, summary, advice, data, columns=(group.family, group.endpoint)))
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
