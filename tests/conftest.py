"""Shared set-up. Servers are real processes on loopback (support/servers.py),
proxies are real nginx / HAProxy (support/proxies.py)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="session")
def loopback_v6() -> None:
    """Fail (not skip) when ::1 is missing: IPv6 clients are part of the contract."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
