"""What the host tells about where clients come from, read once at start-up.

A container behind Docker's bridge network (or any NAT gateway, or Docker's
userland ``docker-proxy`` for published ports) sees every client as the
bridge's gateway: the connection was made by the host's NAT or proxy, and the
client's address is gone before the request reaches the container. realip can
then only say so: :func:`default_gateway` gives the address to compare peers
with, and :class:`realip.core.Resolver` warns once when the gateway itself is a
peer (the fix is host networking, PROXY protocol, or a proxy that adds headers).
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

__all__ = ["default_gateway"]

#: The kernel's IPv4 routing table, one route a line: interface, destination,
#: gateway (hexadecimal, in the host's byte order), flags, ...
ROUTES = Path("/proc/net/route")


def default_gateway(routes: Path = ROUTES) -> str | None:
    """The IPv4 default gateway of this host (or container), or ``None`` when there is
    none or the table cannot be read (not Linux)."""
    try:
        lines = routes.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "00000000" and int(fields[3], 16) & 0x2:  # default route, RTF_GATEWAY
            try:
                return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
            except (ValueError, struct.error):
                return None
    return None
