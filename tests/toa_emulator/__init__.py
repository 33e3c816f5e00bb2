"""A test-only stand-in for the TOA kernel modules, loaded with ``LD_PRELOAD``.

``toa_emu.c`` wraps ``getsockopt``, ``getpeername``, ``accept``, ``accept4`` and
``sendto`` and answers the TOA lookup (``getsockopt(fd, IPPROTO_IP, 4096)``),
Alibaba vtoa's virtual-server calls (``1345..1347``) and the rewritten peer name
exactly as ``docs/toa-module.md`` and ``docs/vendors/index.md`` say the real modules
do, keyed by the client address the kernel really sees. What the kernel's own TCP
table says (sock_diag, ``/proc/net/tcp``) is left alone, as the real modules leave
it. Since ``LD_PRELOAD`` only works at process start, a test runs its server (or a
probe script) in a subprocess::

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
``toa200:[IPv4]:PORT``
    Tencent's and UCloud's IPv4 option (200/8): only the ``rewriting`` module
    parses it (as ``v4toa``); the others leave the peer alone.
``v6vtoa:[IPv6]:PORT``
    Alibaba's V6VTOA option (249/40), parsed by the ``vtoa`` module only: an
    ``AF_INET`` socket reports an ``AF_INET6`` peer of 28 bytes (copied up to
    the caller's buffer, the length set to 28, as the kernel does), an
    ``AF_INET6`` socket that address.
``errno:N``
    The lookup fails with errno ``N`` (``EIO`` = 5, ``EBADF`` = 9, ...).
``badlen:N``
    The lookup "succeeds" with only ``N`` < 20 bytes: a module realip does not know.
``none``
    No option: ``EINVAL``. The default for clients without a rule.
``nomodule``
    Only as ``"*": "nomodule"``: no module on the host, same as ``module=False``.

Any value may end in ``+vs:VID:[VIP]:VPORT``: the connection also carried
Alibaba's virtual server, which the ``vtoa`` module answers through
``getsockopt(IPPROTO_IP, 1345)`` and ``1346`` (an IPv4 VIP) or ``1347`` (the
IPv6 VIP of a ``v6vtoa`` rule, port 0); other connections get ``ESRCH``.

``module`` picks the module (:data:`MODULES`): ``"present"`` (or ``True``) one with the
lookup (Huawei's IPv6 build, dpvs); ``"rewriting"`` one that only rewrites
``getpeername()`` (UCloud, Huawei ``master``): 254/8 and 200/8, the lookup
``ENOPROTOOPT`` on every socket; ``"vtoa"`` Alibaba's (254/8, NAT64 on ``AF_INET6``
only, 249, the virtual server; the lookup ``ENOPROTOOPT``); ``"absent"`` (or
``False``) none.

Whatever the rules, a buffer shorter than 20 bytes gets ``EINVAL``, a listening
or unconnected socket ``ENOTCONN``, and without a module with the lookup every IP
socket ``ENOPROTOOPT``. A bad rule aborts the process with a message on stderr.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LIBRARY_NAME", "MODULES", "SOURCE", "LogEntry", "build", "count_calls", "count_lookups", "env", "read_log"]

#: The emulated modules, by the value of ``TOA_EMU_MODULE``.
MODULES = ("present", "rewriting", "vtoa", "absent")

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
    module: bool | str = True,
) -> dict[str, str]:
    """Environment variables that preload the emulator with these rules.

    Merge them over ``os.environ`` for the subprocess. ``rules`` is a mapping
    ``{client: value}`` or the raw ``"KEY=VALUE;..."`` text; ``log`` names the
    file that gets one line per call; ``module`` is one of :data:`MODULES`
    (``True``: ``"present"``, ``False``: ``"absent"``, a host without a module).
    Every variable is set, so nothing leaks in from the caller's environment.
    """
    kind = ("present" if module else "absent") if isinstance(module, bool) else module
    if kind not in MODULES:
        raise ValueError(f"TOA emulator module {module!r}: expected one of {MODULES}")
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
        "TOA_EMU_MODULE": kind,
        "TOA_EMU_LOG": str(log.resolve()) if log is not None else "",
    }


@dataclass(frozen=True)
class LogEntry:
    """One call seen by the emulator: a ``getsockopt(IPPROTO_IP, 4096)`` lookup, one of
    vtoa's ``1345..1347``, or a sock_diag request (a read of the kernel's TCP table)."""

    pid: int
    fd: int
    peer: str | None
    """The client as the kernel sees it (normalised), ``None`` if not connected or not known."""
    result: int
    """0 or the errno the call failed with."""
    call: str = "4096"
    """The optname (``"4096"``, ``"1345"``, ``"1346"``, ``"1347"``) or ``"diag"``."""


def read_log(log: Path) -> list[LogEntry]:
    """Every call logged so far, oldest first (none if the file is missing)."""
    if not log.exists():
        return []
    entries = []
    for line in log.read_text(encoding="ascii").splitlines():
        pid, fd, peer, result, call = line.split(" ")
        entries.append(LogEntry(int(pid), int(fd), None if peer == "-" else peer, int(result), call))
    return entries


def count_lookups(log: Path) -> int:
    """How many lookups (4096) the emulator has answered (every process writing to ``log``)."""
    return count_calls(log, "4096")


def count_calls(log: Path, *calls: str) -> int:
    """How many of these calls (all of them when none is named) were logged."""
    return sum(1 for entry in read_log(log) if not calls or entry.call in calls)
