""":func:`collect`: every check, wired to the real host (``/proc``, ``/sys``,
loopback probes, the process environment)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .. import toa
from ..toa import TOAAnswer, TOAStatus
from .environment import environment_findings
from .expectations import expectation_findings
from .listeners import OWNER_SCAN_BUDGET, listener_findings, probe_accepts_ipv4, read_listeners, socket_owners
from .model import Finding, Report
from .ranges import range_findings
from .sysctls import bindv6only_finding, ip_forward_finding, read_sysctl
from .toa_module import (
    nat64_finding,
    probe_toa,
    read_module_signs,
    toa_firewall_finding,
    toa_module_finding,
    toa_probe_finding,
)

__all__ = ["collect"]


def collect(
    *,
    root: Path = Path("/"),
    probes: bool = True,
    toa_probe: Callable[[], TOAAnswer] = probe_toa,
    accepts_ipv4: Callable[[int], bool | None] = probe_accepts_ipv4,
    owner_budget: float = OWNER_SCAN_BUDGET,
    environ: Mapping[str, str] | None = None,
    expect: Sequence[str] = (),
) -> Report:
    """Run every check. ``probes=False`` skips the IPv4 connects to other
    processes' ``[::]`` listeners; the TOA probe only talks to itself and always runs.

    ``environ`` is checked for ``REALIP_*`` variables (default: this process's
    environment). ``expect`` names what the host should have (see
    :data:`~realip.doctor.expectations.EXPECTATIONS`); what is missing becomes
    a ``problem``.
    """
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
    if module_loaded:
        findings.append(toa_firewall_finding())

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
    environment = os.environ if environ is None else environ
    findings += environment_findings(environment)
    findings += range_findings(environment)  # the age of each named range the environment uses
    findings.append(nat64_finding(module_loaded, listeners, owners=owners))
    findings += expectation_findings(expect, findings)
    return Report(findings, probes, tuple(expect))
