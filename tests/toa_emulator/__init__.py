"""A test-only stand-in for the TOA kernel module, loaded with ``LD_PRELOAD``.

``toa_emu.c`` wraps ``getsockopt``, ``getpeername``, ``accept`` and ``accept4``
and answers the TOA lookup (``getsockopt(fd, IPPROTO_IP, 4096)``) exactly as the
table in ``docs/toa-module.md`` says the real module does, keyed by the client address
the kernel really sees. Since ``LD_PRELOAD`` only works at process start, a test
runs its server (or a probe script) in a subprocess::

    library = toa_emulator.build(tmp_path)
    environment = {**os.environ, **toa_emulator.env({"127.0.0.5": "nat64:[2001:db8::5]:40000"},
                                                    log, library=library)}
    subprocess.run([sys.executable, script], env=environment, timeout=60, check=True)
    assert toa_emulator.count_lookups(log) == 1

Rules map a client IP (as ``getpeername()`` reports it, IPv4-mapped written as
dotted IPv4; ``"*"`` for everyone else) to what the module knows about that
client's connections:

``nat64:[IPv6]:PORT``
    A NAT64 option. ``AF_INET`` socket: the lookup returns the 20 bytes,
    ``getpeername()`` is untouched. ``AF_INET6`` socket: ``getpeername()`` (and
    ``accept()``) report that address, the lookup answers ``EFAULT``. The
    address may be IPv4-mapped.
``v4toa:[IPv4]:PORT``
    An IPv4 TOA option (254/8): ``getpeername()`` reports that address
    (IPv4-mapped on an ``AF_INET6`` socket), the lookup answers ``EFAULT``.
``errno:N``
    The lookup fails with errno ``N`` (``EIO`` = 5, ``EBADF`` = 9, ...).
``badlen:N``
    The lookup "succeeds" with only ``N`` < 20 bytes: a module realip does not know.
``none``
    No option: ``EINVAL``. The default for clients without a rule.
``nomodule``
    Only as ``"*": "nomodule"``: no module on the host, same as ``module=False``.

Whatever the rules, a buffer shorter than 20 bytes gets ``EINVAL``, a listening
or unconnected socket ``ENOTCONN``, and without the module every IP socket
``ENOPROTOOPT``. A bad rule aborts the process with a message on stderr.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LIBRARY_NAME", "SOURCE", "LogEntry", "build", "count_lookups", "env", "read_log"]

SOURCE = Path(__file__).resolve().with_name("toa_emu.c")
LIBRARY_NAME = "libtoa_emu.so"

_CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread")


def build(dest_dir: Path) -> Path:
    """Compile the emulator into ``dest_dir`` and return the library's path.

    gcc is a hard requirement of the test suite: a failure raises with the
    compiler's output rather than skipping anything.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    library = dest_dir.resolve() / LIBRARY_NAME
    command = ["gcc", *_CFLAGS, "-o", str(library), str(SOURCE), "-ldl"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"building the TOA emulator failed: {' '.join(command)}\n{result.stderr}")
    return library


def env(
    rules: Mapping[str, str] | str,
    log: Path | None = None,
    *,
    library: Path,
    module: bool = True,
) -> dict[str, str]:
    """Environment variables that preload the emulator with these rules.

    Merge them over ``os.environ`` for the subprocess. ``rules`` is a mapping
    ``{client: value}`` or the raw ``"KEY=VALUE;..."`` text; ``log`` names the
    file that gets one line per lookup; ``module=False`` emulates a host without
    the module. Every variable is set, so nothing leaks in from the caller's
    environment.
    """
    if isinstance(rules, str):
        text = rules
    else:
        for key, value in rules.items():
            if any(c in key for c in ";=") or ";" in value:
                raise ValueError(f"TOA emulator rule {key!r}: {value!r} may not contain ';' (or '=' in the key)")
        text = ";".join(f"{key}={value}" for key, value in rules.items())
    return {
        "LD_PRELOAD": str(library.resolve()),
        "TOA_EMU": text,
        "TOA_EMU_MODULE": "present" if module else "absent",
        "TOA_EMU_LOG": str(log.resolve()) if log is not None else "",
    }


@dataclass(frozen=True)
class LogEntry:
    """One ``getsockopt(IPPROTO_IP, 4096)`` call seen by the emulator."""

    pid: int
    fd: int
    peer: str | None
    """The client as the kernel sees it (normalised), ``None`` if not connected."""
    result: int
    """0 or the errno the call failed with."""


def read_log(log: Path) -> list[LogEntry]:
    """Every lookup logged so far, oldest first (none if the file is missing)."""
    if not log.exists():
        return []
    entries = []
    for line in log.read_text(encoding="ascii").splitlines():
        pid, fd, peer, result = line.split(" ")
        entries.append(LogEntry(int(pid), int(fd), None if peer == "-" else peer, int(result)))
    return entries


def count_lookups(log: Path) -> int:
    """How many lookups the emulator has answered (every process writing to ``log``)."""
    return len(read_log(log))
