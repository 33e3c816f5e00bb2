"""realip: the real client address for ASGI and WSGI applications.

Unwraps IPv4-mapped peers of dual-stack listeners, recovers NAT64 clients from
the kernel TOA module, and believes forwarding headers only from trusted
proxies. The guides are in ``docs/``.
"""

from __future__ import annotations

from .address import AddressError, parse_host_port, parse_ip
from .asgi import RealIPMiddleware
from .errors import ConfigError
from .result import Resolution, Source
from .wsgi import RealIPWSGIMiddleware

__all__ = [
    "AddressError",
    "ConfigError",
    "RealIPMiddleware",
    "RealIPWSGIMiddleware",
    "Resolution",
    "Source",
    "parse_host_port",
    "parse_ip",
]

__version__ = "0.1.0"
