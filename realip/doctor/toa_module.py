"""The TOA kernel module (NAT64 load balancers): signs of it in ``/sys`` and
``/proc``, a live lookup on one loopback connection, and where to listen and
whom to let in when it is loaded.

The module's interface and its hazards are described in ``docs/toa-module.md``.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, Final

from .. import toa
from ..connection import DEFAULT_TOA_PEERS
from ..toa import TOAAnswer, TOAStatus
from .listeners import Listener, Process, reverse_proxy_name
from .model import Finding, endpoint

__all__ = [
    "TOA_STATS_LIMIT",
    "ModuleSigns",
    "nat64_finding",
    "probe_toa",
    "read_module_signs",
    "toa_firewall_finding",
    "toa_module_finding",
    "toa_probe_finding",
]

#: /proc/net/toa_stats is shown up to this many bytes.
TOA_STATS_LIMIT: Final = 4096


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
    """``/sys/module/toa``, a ``toa`` line in ``/proc/modules`` and ``/proc/net/toa_stats``."""
    listed = False
    with contextlib.suppress(OSError), (root / "proc" / "modules").open(encoding="utf-8", errors="replace") as modules:
        listed = any(line.split(" ", 1)[0] == "toa" for line in modules)
    stats: str | None = None
    with contextlib.suppress(OSError), (root / "proc" / "net" / "toa_stats").open("rb") as f:
        stats = f.read(TOA_STATS_LIMIT).decode("utf-8", errors="replace").rstrip()
    return ModuleSigns((root / "sys" / "module" / "toa").is_dir(), listed, stats)


def toa_module_finding(signs: ModuleSigns, shim_available: bool) -> Finding:
    """Which signs of the module were seen, and whether realip's compiled shim can ask it."""
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
    """Classify the live lookup. ``answer`` is ``None`` when the probe could not run.

    A loopback connection carries no TCP option, so a module that answers
    ``EINVAL`` is loaded and working; ``ENOPROTOOPT`` means no module (or one
    without the NAT64 lookup); anything else is odd and said so.
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
    if status is TOAStatus.NO_MODULE:
        if signs.present:
            return Finding(
                "toa_probe",
                "warn",
                "live probe: a module named toa is loaded but does not answer the NAT64 lookup "
                "(getsockopt IPPROTO_IP 4096: ENOPROTOOPT); NAT64 clients will appear as the load balancer",
                "it is probably an IPv4-only TOA build (IPv4 TOA still works: it rewrites getpeername()); "
                "for NAT64 use a build with the lookup (huaweicloud/elb-toa, dpvs kmod/toa); "
                "see docs/toa-module.md#other-vendors-modules",
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
