"""What every check produces: :class:`Finding`, and the :class:`Report` of a run.

Nothing here reads the host; the checks (``sysctls``, ``toa_module``,
``listeners``, ``environment``, ``expectations``) build findings, ``render``
prints them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final, Literal

from .. import __version__

__all__ = ["CHECKS", "SCHEMA_VERSION", "Finding", "Report", "Status", "endpoint", "format_address"]

Status = Literal["ok", "info", "warn", "problem"]

#: Bumped when a key of the ``--json`` output changes meaning or disappears.
SCHEMA_VERSION: Final = 1

#: Every check name, in report order, with the section it is shown under.
CHECKS: Final[dict[str, str]] = {
    "bindv6only": "Kernel settings",
    "ip_forward": "Kernel settings",
    "toa_module": "TOA module (NAT64 load balancers)",
    "toa_probe": "TOA module (NAT64 load balancers)",
    "toa_firewall": "TOA module (NAT64 load balancers)",
    "listeners": "TCP listeners (this network namespace)",
    "listener": "TCP listeners (this network namespace)",
    "environment": "Configuration (REALIP_* variables of this environment)",
    "nat64": "NAT64 deployments",
    "expect": "Expectations (--expect)",
}


@dataclass(frozen=True)
class Finding:
    """One line of the report.

    ``check`` names the check (stable, see :data:`CHECKS`); ``summary`` is one
    line, with no layout padding (the JSON output shows it as it is);
    ``advice`` what to do about it ("" when nothing); ``data`` the facts
    behind it, JSON-serialisable; ``details`` extra lines shown only in the
    human output (their content is also in ``data``). ``columns`` are the
    words ``summary`` starts with that the human output lines up with the
    findings around it (a listener's family and endpoint).
    """

    check: str
    status: Status
    summary: str
    advice: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    details: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "summary": self.summary,
            "advice": self.advice,
            "data": self.data,
        }


@dataclass(frozen=True)
class Report:
    """The findings of one run. ``expect`` names what the user said the host
    should have (``--expect``); a problem then makes the command fail."""

    findings: list[Finding]
    probes: bool
    expect: tuple[str, ...] = ()

    @property
    def problems(self) -> int:
        return sum(finding.status == "problem" for finding in self.findings)

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


def format_address(address: IPv4Address | IPv6Address) -> str:
    """An address as people write it; a mapped one as ``::ffff:a.b.c.d``."""
    # str() of a mapped IPv6Address is "::ffff:7f00:1" before Python 3.13.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def endpoint(address: IPv4Address | IPv6Address | None, port: int | None) -> str:
    """``203.0.113.5:80`` or ``[2001:db8::5]:80``."""
    if isinstance(address, IPv6Address):
        return f"[{format_address(address)}]:{port}"
    return f"{address}:{port}"
