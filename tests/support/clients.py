"""Real HTTP and WebSocket clients bound to chosen loopback source addresses.

Several loopback addresses (127.0.0.1, 127.0.0.2, ..., ::1) make several
distinct clients on one machine.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

IPV4_CLIENTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
IPV6_CLIENT = "::1"


def target_for(source: str) -> str:
    """The server address a client with this source address connects to."""
    return "::1" if ":" in source else "127.0.0.1"


def client(source: str, **kwargs: Any) -> httpx.Client:
    """An httpx client whose connections leave from ``source``."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10.0, **kwargs)


def local_port(response: httpx.Response) -> int:
    """The client-side port of the connection that carried ``response``."""
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


def whoami(url: str, source: str, headers: dict[str, str] | None = None) -> tuple[dict[str, Any], int]:
    """GET ``url`` from ``source``; the JSON body and the client's own port."""
    with client(source) as c, c.stream("GET", url, headers=headers) as response:
        port = local_port(response)  # before the body: the server may close after it
        response.read()
        response.raise_for_status()
        return response.json(), port


def websocket_whoami(url: str, source: str) -> dict[str, Any]:
    """Open a WebSocket from ``source`` and read the first JSON message."""
    from websockets.sync.client import connect

    host = source
    with connect(url, source_address=(host, 0), proxy=None, open_timeout=10, close_timeout=5) as ws:
        return json.loads(ws.recv(timeout=10))
