"""Servers that cannot give realip the connection, and what works instead.

TOA lookups need the accepted socket in the process that serves the request,
and realip's PROXY protocol needs the connection's first bytes. These servers
give neither to Python code; the middlewares still unwrap mapped addresses and
read forwarding headers from trusted proxies under them. :func:`detect` tells
which one is serving, from what a request carries, so that the one line realip
logs at the first request can name the server and the alternative.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["GRANIAN", "MOD_WSGI_DAEMON", "NGINX_UNIT", "WAITRESS", "Limitation", "detect"]

#: ASGI servers with realip's connection answer (TOA, PROXY protocol).
_ASGI_SERVERS: Final = (
    "uvicorn (`realip serve`, or --http realip.uvicorn:HttpToolsProtocol), gunicorn -k realip.gunicorn.ASGIWorker "
    "or -k realip.gunicorn.UvicornWorker, python -m realip.hypercorn, python -m realip.daphne"
)
#: WSGI servers that expose the socket.
_WSGI_SERVERS: Final = "gunicorn (sync, gthread, gevent), uWSGI --http-socket, Werkzeug"


@dataclass(frozen=True)
class Limitation:
    """One server that cannot give the connection: why, and what works instead."""

    server: str
    why: str
    instead: str

    def message(self) -> str:
        """The line realip logs once, at start-up or at the first request."""
        return (
            f"realip: {self.server} {self.why}, so connection-level answers (TOA, PROXY protocol) are not "
            f"available; mapped addresses are still unwrapped and trusted proxies' headers still read. "
            f"Instead: {self.instead} (docs/servers.md)."
        )


GRANIAN: Final = Limitation(
    "Granian",
    "accepts connections in Rust and gives Python neither the socket nor a hook for it",
    f"serve the app with {_ASGI_SERVERS}; for WSGI apps, {_WSGI_SERVERS}",
)
WAITRESS: Final = Limitation(
    "waitress",
    "does not expose the connection's socket",
    f"{_WSGI_SERVERS}; for PROXY protocol, gunicorn's own --proxy-protocol",
)
NGINX_UNIT: Final = Limitation(
    "NGINX Unit",
    "accepts connections in its router process, not in the application's",
    "Unit's own listener option forwarded (client_ip from trusted sources), or one of "
    f"{_ASGI_SERVERS} / {_WSGI_SERVERS} behind Unit's proxy",
)
MOD_WSGI_DAEMON: Final = Limitation(
    "mod_wsgi in daemon mode",
    "runs the application in another process than the one holding the connection",
    "Apache's mod_remoteip before mod_wsgi (RemoteIPHeader from trusted proxies, RemoteIPProxyProtocol On), "
    f"or one of {_WSGI_SERVERS} behind Apache's mod_proxy",
)


def detect(*, scope: Mapping[str, Any] | None = None, environ: Mapping[str, Any] | None = None) -> Limitation | None:
    """The :class:`Limitation` of the server of this request, if realip knows it has one.

    WSGI: ``SERVER_SOFTWARE`` (``waitress``, ``Unit/...``, ``Granian``) and
    mod_wsgi's ``mod_wsgi.process_group`` (non-empty in daemon mode). ASGI
    scopes name no server: Granian is recognised by its module being loaded in
    the process that serves (Granian's workers import it).
    """
    if environ is not None:
        if environ.get("mod_wsgi.process_group"):
            return MOD_WSGI_DAEMON
        software = str(environ.get("SERVER_SOFTWARE") or "").lower()
        if software.startswith("waitress"):
            return WAITRESS
        if software.startswith("unit/") or software == "unit":
            return NGINX_UNIT
        if software.startswith("granian"):
            return GRANIAN
        return None
    if scope is not None and "granian" in sys.modules:
        return GRANIAN
    return None
