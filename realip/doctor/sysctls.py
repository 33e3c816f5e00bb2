"""Kernel settings that decide what a listener reports: ``net.ipv6.bindv6only``
(whether ``[::]`` takes IPv4 clients too) and ``net.ipv4.ip_forward`` (whether
this host routes or NATs for containers and VMs)."""

from __future__ import annotations

from pathlib import Path

from .model import Finding

__all__ = ["bindv6only_finding", "ip_forward_finding", "read_sysctl"]


def read_sysctl(root: Path, name: str) -> int | None:
    """The integer value of sysctl ``name`` (``net.ipv6.bindv6only``), or ``None``."""
    path = root / "proc" / "sys" / name.replace(".", "/")
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def bindv6only_finding(value: int | None) -> Finding:
    """``0`` (the Linux default): a ``[::]`` listener takes IPv4 clients as
    ``::ffff:a.b.c.d``; ``1``: it takes IPv6 only, unless the server clears
    ``IPV6_V6ONLY`` itself."""
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
    """A host that forwards IPv4 runs containers or VMs behind a NAT: their apps
    see the client only if the NAT keeps the source address."""
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
