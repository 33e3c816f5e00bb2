"""Start real proxies (nginx from Debian's package) on loopback for a test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from .programs import require_program
from .servers import listening_socket

PROXIES = Path(__file__).resolve().parents[1] / "proxies"


def free_port() -> int:
    """A port free on both 127.0.0.1 and ::1: the proxies listen on both."""
    import socket

    for _ in range(50):
        with contextlib.closing(listening_socket("v4")) as sock:
            port = int(sock.getsockname()[1])
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(("::1", port))
            except OSError:
                continue  # taken on ::1: try another
        return port
    raise RuntimeError("no port free on both 127.0.0.1 and ::1 after 50 tries")


def render(template: str, prefix: Path, **values: object) -> Path:
    text = (PROXIES / template).read_text()
    for name, value in {"PREFIX": prefix, **values}.items():
        text = text.replace(f"@{name}@", str(value))
    assert "@" not in text.replace("@@", ""), f"unfilled placeholder in {template}"
    target = prefix / template
    target.write_text(text)
    return target


@contextlib.contextmanager
def haproxy(tmp: Path, template: str, **values: object) -> Iterator[tuple[int, Path]]:
    """Run HAProxy with ``template``; yields its port (127.0.0.1 and ::1) and its log file."""
    binary = require_program("haproxy")
    prefix = tmp / f"haproxy-{free_port()}"
    prefix.mkdir(parents=True)
    port = free_port()
    conf = render(template, prefix, PORT=port, **values)
    log_path = prefix / "haproxy.log"
    check = subprocess.run([binary, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy rejected {template}: {check.stdout}{check.stderr}")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_port(process, port, lambda: log_path.read_text())
        yield port, log_path
    finally:
        _stop(process, signal.SIGUSR1)  # soft stop


def _wait_port(process: subprocess.Popen[bytes], port: int, diagnostics: Callable[[], str]) -> None:
    import socket

    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"proxy exited: {diagnostics()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"proxy did not listen: {diagnostics()}") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextlib.contextmanager
def nginx(tmp: Path, template: str, **values: object) -> Iterator[int]:
    """Run nginx with ``template``; yields the port it listens on (127.0.0.1 and ::1)."""
    binary = require_program("nginx")
    prefix = tmp / f"nginx-{template.removesuffix('.conf')}-{free_port()}"
    prefix.mkdir(parents=True)
    port = free_port()
    conf = render(template, prefix, PORT=port, **values)
    log = open(prefix / "stderr.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(prefix / 'stderr.log').read_text()}{_error_log(prefix)}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not answer: {_error_log(prefix)}") from None
                time.sleep(0.1)
        yield port
    finally:
        _stop(process, signal.SIGQUIT)  # graceful shutdown
        log.close()


def _error_log(prefix: Path) -> str:
    path = prefix / "error.log"
    return path.read_text()[-3000:] if path.exists() else ""


@contextlib.contextmanager
def apache(tmp: Path, template: str, **values: object) -> Iterator[int]:
    """Run Apache httpd (Debian's ``apache2``) in the foreground with ``template``.

    Its own ServerRoot-relative modules, PidFile, logs and ports; yields the port
    it listens on (127.0.0.1 and ::1).
    """
    binary = require_program("apache2")
    prefix = tmp / f"apache-{template.removesuffix('.conf')}-{free_port()}"
    prefix.mkdir(parents=True)
    port = free_port()
    conf = render(template, prefix, PORT=port, **values)
    check = subprocess.run([binary, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"apache2 rejected {template}: {check.stdout}{check.stderr}")
    log_path = prefix / "stderr.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, "-f", str(conf), "-DFOREGROUND"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_port(process, port, lambda: log_path.read_text() + _error_log(prefix))
        yield port
    finally:
        _stop(process, signal.SIGTERM)  # stop now (SIGWINCH would be the graceful stop)


@contextlib.contextmanager
def squid(tmp: Path, template: str, **values: object) -> Iterator[int]:
    """Run squid (Debian's package) in the foreground (``-N``) with ``template``.

    Yields the port it listens on (127.0.0.1 and ::1). Started as root, squid
    switches to ``@USER@`` (Debian's ``proxy``) before it opens its logs, so it
    gets a directory of its own that this user owns, outside pytest's private
    temporary tree; it is removed afterwards.
    """
    import pwd
    import shutil
    import tempfile

    binary = require_program("squid")
    port = free_port()
    if os.geteuid() == 0:
        user = "proxy"
        prefix = Path(tempfile.mkdtemp(prefix=f"realip-squid-{port}-"))
        entry = pwd.getpwnam(user)
        os.chown(prefix, entry.pw_uid, entry.pw_gid)
    else:
        user = pwd.getpwuid(os.geteuid()).pw_name
        prefix = tmp / f"squid-{port}"
        prefix.mkdir(parents=True)
    try:
        conf = render(template, prefix, PORT=port, USER=user, **values)
        check = subprocess.run([binary, "-k", "parse", "-f", str(conf)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"squid rejected {template}: {check.stdout[-3000:]}{check.stderr[-3000:]}")
        log_path = tmp / f"squid-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [binary, "-N", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait_port(process, port, lambda: log_path.read_text()[-3000:])
            yield port
        finally:
            _stop(process, signal.SIGTERM)  # shutdown_lifetime 0: at once
            for name in ("cache.log", "access.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(prefix / name, tmp / f"squid-{port}-{name}")  # kept for a failing test's report
    finally:
        if os.geteuid() == 0:
            shutil.rmtree(prefix, ignore_errors=True)
