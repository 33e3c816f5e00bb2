"""Apps that echo realip's whole answer, TOA provenance included, for the emulated modules.

Configured from ``REALIP_*`` variables like ``tests/apps/echo.py`` (the vtoa
metadata with ``REALIP_TOA_VTOA_METADATA``), plus one of the emulator's own, read
when the server imports this module (before its first connection):

``TOA_EMU_SYS_MODULE``
    A directory standing in for ``/sys/module`` (with ``toa``, ``vtoa``, ...
    subdirectories): the emulator answers the system calls, but a module's
    presence is read from the file system, which ``LD_PRELOAD`` cannot fake.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from typing import Any

import realip.toa
from realip import RealIPMiddleware, RealIPWSGIMiddleware, Resolution

_sys_module = os.environ.get("TOA_EMU_SYS_MODULE")
if _sys_module:
    realip.toa._SYS_MODULE = _sys_module

FORWARDING = ("x-forwarded-for", "x-real-ip", "forwarded")


def describe(realip: Resolution, client: Any, headers: dict[str, str]) -> dict[str, Any]:
    toa = realip.toa
    answer = None
    if toa is not None:
        vs = toa.virtual_server
        answer = {
            "status": toa.status.value,
            "errno": toa.errno,
            "interface": toa.interface.value if toa.interface is not None else None,
            "balancer": list(toa.balancer) if toa.balancer is not None else None,
            "rewritten": toa.rewritten_by_kernel,
            "virtual_server": None if vs is None else [vs.vpc_id, str(vs.address), vs.port],
        }
    return {
        "client": list(client) if client else None,
        "peer": list(realip.peer or ()),
        "source": realip.source,
        "hops": list(realip.hops),
        "toa": answer,
        "headers": {name: value for name, value in headers.items() if name in FORWARDING},
        "pid": os.getpid(),
    }


async def _asgi(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    body = json.dumps(describe(scope["extensions"]["realip"], scope["client"], headers)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    client = (environ["REMOTE_ADDR"], int(environ.get("REMOTE_PORT") or 0))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(describe(environ["realip"], client, headers)).encode()]


asgi_app = RealIPMiddleware(_asgi)
wsgi_app = RealIPWSGIMiddleware(_wsgi)
