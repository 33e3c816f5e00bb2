"""realip demo: a real server on a dual-stack listener, real clients, one table.

Starts uvicorn with ``fastapi_app.py`` on a ``[::]`` socket that also accepts
IPv4 (``IPV6_V6ONLY`` off), sends requests from several loopback addresses,
and prints what the server's socket reported, what the app saw, and which
source realip used. Run it with ``make demo``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
CLIENTS = [("IPv4", "127.0.0.1"), ("IPv4", "127.0.0.2"), ("IPv6", "::1")]


def dual_stack_listener() -> socket.socket:
    # A single-process "uvicorn --host ::" would be IPv6-only (asyncio sets
    # IPV6_V6ONLY); gunicorn, "uvicorn --workers N" and a socket passed with
    # --fd are dual-stack. Build that socket here and hand it over.
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def uvicorn_on(sock: socket.socket, app: str) -> Iterator[int]:
    port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "uvicorn", app, "--fd", str(sock.fileno()), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    proc = subprocess.Popen(argv, pass_fds=[sock.fileno()], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("demo: uvicorn did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def ask(port: int, source: str, headers: dict[str, str] | None = None) -> dict:
    host = "[::1]" if ":" in source else "127.0.0.1"
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"http://{host}:{port}/", headers=headers).json()


def hostport(pair: list) -> str:
    host, port = pair
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main() -> None:
    rows = [("client", "connects from", "server socket reported", "app saw", "source")]
    with dual_stack_listener() as sock, uvicorn_on(sock, "fastapi_app:app") as port:
        for family, source in CLIENTS:
            seen = ask(port, source)
            rows.append((family, source, hostport(seen["peer"]), hostport(seen["client"]), seen["source"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"uvicorn on a dual-stack [::] listener (port {port}), app: examples/fastapi_app.py\n")
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
