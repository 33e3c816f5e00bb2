"""Start real servers (uvicorn, gunicorn, Hypercorn, Werkzeug) on loopback.

Every server gets a listening socket created here and handed over as an
inherited file descriptor: that is how the tests get a truly dual-stack
``[::]`` listener (``IPV6_V6ONLY`` off, whatever ``net.ipv6.bindv6only`` says;
a single-process ``uvicorn --host ::`` would be IPv6-only) and a free port
without races.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent

#: How long a server may take to answer its first request.
START_TIMEOUT = 30.0
#: How long a server may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


def listening_socket(family: str = "dual") -> socket.socket:
    """A listening TCP socket on an ephemeral port.

    ``dual``: ``[::]`` with ``IPV6_V6ONLY`` off, so IPv4 clients arrive as
    ``::ffff:a.b.c.d``; ``v4``: an AF_INET socket on ``127.0.0.1`` (what a
    NAT64 backend should use); ``v6``: ``[::1]``, IPv6 only.
    """
    if family == "v4":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == "dual":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            # A dual-stack socket must be bound to "::" to accept IPv4 at all;
            # the tests only ever connect to it through loopback addresses.
            sock.bind(("::", 0))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class Server:
    """A server process serving on an inherited listening socket."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    sock: socket.socket
    extra: dict[str, object] = field(default_factory=dict)

    def url(self, host: str = "127.0.0.1", path: str = "/") -> str:
        netloc = f"[{host}]" if ":" in host else host
        return f"http://{netloc}:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 5.0, since: int = 0) -> str:
        """The log from character ``since`` on, once that part contains ``needle``
        (access logs are written after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[since:]
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


def _wait_for_log(server: Server, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in server.log():
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not start:\n{server.log()[-4000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)


#: Starts of a ``{port}`` server: the port is free when picked, and another process
#: may take it before the server binds it; then the server is started on a new one.
PORT_ATTEMPTS = 3


@contextlib.contextmanager
def serve(
    name: str,
    argv: Sequence[str],
    tmp_path: Path,
    *,
    family: str = "dual",
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    ready_path: str = "/",
    ready: bool = True,
    ready_log: str = "Uvicorn running",
) -> Iterator[Server]:
    """Run ``argv`` with ``{fd}`` replaced by the listening socket's descriptor.

    A server that cannot take a socket (uWSGI, waitress) gets ``{port}``
    instead: the port is picked here and freed just before the server binds it;
    if another process took it meanwhile, the server is started again on a new
    one (at most :data:`PORT_ATTEMPTS` times).
    """
    by_port = not any("{fd}" in a for a in argv) and any("{port}" in a for a in argv)
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server = _start(name, argv, tmp_path, family, env, cwd)
        try:
            _wait_ready(server, family, ready, ready_path, ready_log)
        except RuntimeError:
            stop(server.process)
            server.sock.close()
            if by_port and attempt < PORT_ATTEMPTS and "Address already in use" in server.log():
                continue
            raise
        break
    try:
        yield server
    finally:
        stop(server.process)
        server.sock.close()


def _start(
    name: str, argv: Sequence[str], tmp_path: Path, family: str, env: dict[str, str] | None, cwd: Path
) -> Server:
    sock = listening_socket(family)
    fd = sock.fileno()
    port = sock.getsockname()[1]
    if not any("{fd}" in a for a in argv):
        sock.close()
    log_path = tmp_path / f"{name}.log"
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)]), "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    args = [a.replace("{fd}", str(fd)).replace("{port}", str(port)) for a in argv]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[fd] if sock.fileno() != -1 else [],
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    return Server(name, process, port, log_path, sock)


def _wait_ready(server: Server, family: str, ready: bool, ready_path: str, ready_log: str) -> None:
    """Until the server answers on ``ready_path`` (or, ``ready=False``, logs ``ready_log``)."""
    if not ready:  # the caller checks readiness its own way (e.g. PROXY protocol listeners)
        _wait_for_log(server, ready_log, START_TIMEOUT)
        return
    ready_host = "::1" if family == "v6" else "127.0.0.1"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            httpx.get(server.url(ready_host, ready_path), timeout=2.0)
            return
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{server.name} did not answer in {START_TIMEOUT}s:\n{server.log()[-4000:]}"
                ) from exc
            time.sleep(0.1)


def tool(name: str) -> str:
    """Path of a console script installed beside this Python."""
    return str(BIN / name)


# The argv of each server the suite runs. ``{fd}`` is the listening socket.
def uvicorn_argv(
    app: str, *, http: str = "h11", ws: str = "auto", realip: str | None = None, extra: Sequence[str] = ()
) -> list[str]:
    """uvicorn on ``{fd}``; ``realip="HttpToolsProtocol"`` (or ``"H11Protocol"``) selects
    realip's protocol classes, HTTP and WebSocket, as the docs show."""
    if realip is not None:
        http, ws = f"realip.uvicorn:{realip}", "realip.uvicorn:AutoWebSocketsProtocol"
    # --no-proxy-headers: uvicorn's own X-Forwarded-For handling (on by default,
    # trusting 127.0.0.1 and ::1) would run before realip; docs/proxies.md says so.
    return [
        tool("uvicorn"), app, "--fd", "{fd}", "--http", http, "--ws", ws, "--log-level", "info", "--no-proxy-headers",
        *extra,
    ]  # fmt: skip


def gunicorn_argv(app: str, *, worker: str = "sync", extra: Sequence[str] = ()) -> list[str]:
    return [
        tool("gunicorn"), app, "--bind", "fd://{fd}", "--worker-class", worker, "--workers", "1",
        "--threads", "4", "--access-logfile", "-", "--error-logfile", "-", "--graceful-timeout", "2", *extra,
    ]  # fmt: skip


def hypercorn_argv(app: str, *, extra: Sequence[str] = ()) -> list[str]:
    return [tool("hypercorn"), app, "--bind", "fd://{fd}", "--access-logfile", "-", "--error-logfile", "-", *extra]


def uwsgi_argv(app: str) -> list[str]:
    # --http-socket: uWSGI itself speaks HTTP on the accepted connection, so
    # uwsgi.connection_fd() is the client's socket (not so with the --http router).
    return [
        tool("uwsgi"), "--http-socket", "127.0.0.1:{port}", "--module", app, "--master", "--processes", "1",
        "--threads", "2", "--die-on-term", "--need-app", "--disable-write-exception", "--http-keepalive",
    ]  # fmt: skip


def uvicorn_run_argv(app: str, **options: object) -> list[str]:
    """uvicorn started from Python code: ``uvicorn.run(app, http=..., ws=...)``."""
    import json

    return [sys.executable, str(TESTS / "support" / "uvicorn_run.py"), "{fd}", app, json.dumps(options)]


def waitress_argv(app: str) -> list[str]:
    return [tool("waitress-serve"), "--listen=127.0.0.1:{port}", app]


def werkzeug_argv(app: str) -> list[str]:
    return [sys.executable, str(TESTS / "support" / "werkzeug_fd.py"), "{fd}", app]
