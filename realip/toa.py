"""Ask the kernel TOA module for the real client of one TCP connection.

A layer-4 load balancer doing NAT64 (Huawei ELB, dpvs, LVS FULLNAT, ...)
replaces the client's source address with its own and carries the real one in
a TCP option; the TOA kernel module stores it on the accepted socket. Behind an
``AF_INET`` listener ``getpeername()`` keeps reporting the load balancer and the
client has to be asked for with ``getsockopt(fd, IPPROTO_IP, 4096)``; the
compiled shim in :mod:`realip._toa` makes that one call with the exact struct the
module expects (20 bytes, see ``docs/toa.md``).

:func:`lookup` turns the result into a :class:`TOAAnswer`. What each outcome of
the system call means, as observed on a real kernel:

==========================  ======================  ==========================================
getsockopt result           :class:`TOAStatus`      meaning
==========================  ======================  ==========================================
0 (20 bytes)                ``FOUND``               the NAT64 client: address and port
``EINVAL``                  ``NONE``                module loaded, no NAT64 option on this
                                                    connection (also: buffer too short)
``EFAULT``                  ``NONE``                module loaded and it has *already
                                                    rewritten* ``getpeername()`` (IPv4 TOA,
                                                    or NAT64 on an ``AF_INET6`` listener):
                                                    :attr:`TOAAnswer.rewritten_by_kernel`
``ENOPROTOOPT``             ``NO_MODULE``           no TOA module loaded on this host
(shim missing or stub)      ``UNAVAILABLE``         not built, or not Linux: nothing to ask
anything else               ``ERROR``               unexpected (``ENOTCONN`` on a listening or
                                                    unconnected socket, ``EBADF``, ...)
==========================  ======================  ==========================================

Nothing here decides whom to believe: the module accepts the option from *any*
sender, so the caller must check the socket peer (the load balancer) against
its trusted networks before using a ``FOUND`` address. Nothing is cached either:
every call is one system call.
"""

from __future__ import annotations

import enum
import importlib
import sys
from dataclasses import dataclass
from errno import EBADF, EFAULT, EINVAL, ENOPROTOOPT, ENOSYS, ENOTCONN
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final, Protocol

__all__ = ["SupportsFileno", "TOAAnswer", "TOAStatus", "available", "lookup", "unavailable_reason"]


class TOAStatus(enum.Enum):
    """What the TOA module said about one connection."""

    #: The module returned the NAT64 client (``address`` and ``port`` are set).
    FOUND = "found"
    #: The module is loaded but has nothing to add (``EINVAL`` or ``EFAULT``).
    NONE = "none"
    #: No TOA module is loaded on this host (``ENOPROTOOPT``).
    NO_MODULE = "no-module"
    #: The shim is not compiled, or this is not Linux: the module cannot be asked.
    UNAVAILABLE = "unavailable"
    #: Any other error (``ENOTCONN``, ``EBADF``, ...); never raised, only reported.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TOAAnswer:
    """The result of one :func:`lookup`.

    ``address`` and ``port`` are set only when ``status`` is
    :attr:`TOAStatus.FOUND`; an IPv4-mapped answer (``::ffff:a.b.c.d``) is
    unwrapped to :class:`~ipaddress.IPv4Address`. ``errno`` is 0 when found,
    otherwise the error the lookup failed with (``ENOSYS`` for
    :attr:`TOAStatus.UNAVAILABLE`).
    """

    status: TOAStatus
    address: IPv4Address | IPv6Address | None = None
    port: int | None = None
    errno: int = 0

    @property
    def rewritten_by_kernel(self) -> bool:
        """The module has rewritten this socket's ``getpeername()`` itself.

        True when the lookup answered ``EFAULT``: the module holds an option
        for this connection but serves it through the peer name (IPv4 TOA, or
        NAT64 on an ``AF_INET6`` listener). The peer name then shows the
        option's address, and user space cannot see who sent the option.
        """
        return self.errno == EFAULT

    @property
    def connection_gone(self) -> bool:
        """The connection was reset before it was asked (``ENOTCONN``).

        With the module loaded, a client (or load balancer) that resets right
        after sending its request leaves a socket whose lookup and
        ``getpeername()`` both answer ``ENOTCONN``: a normal event on a busy
        site, and nothing can be learnt about the connection any more.
        """
        return self.status is TOAStatus.ERROR and self.errno == ENOTCONN


class SupportsFileno(Protocol):
    """Anything with a ``fileno()``: :class:`socket.socket`, asyncio's
    ``TransportSocket``, uvloop's ``PseudoSocket``."""

    def fileno(self) -> int: ...


def _load_shim() -> tuple[Any, ImportError | None]:
    """The compiled shim, or ``None`` and the error importing it raised.

    Imported by name so that a missing build (an sdist installed without a C
    compiler, a checkout without an in-place build) degrades to UNAVAILABLE.
    """
    try:
        return importlib.import_module("realip._toa._toa_lib"), None
    except ImportError as exc:
        return None, exc


_shim, _SHIM_ERROR = _load_shim()
_AVAILABLE: Final[bool] = _shim is not None and bool(_shim.lib.realip_toa_available())

#: How to get the shim; setup.py prints the same advice when it cannot build it.
_GET_THE_SHIM: Final = (
    "To get it, install a realip wheel, or install gcc and the Python headers (python3-dev) "
    "and run: pip install --force-reinstall --no-cache-dir realip."
)
_SILENCE: Final = "Set toa=False or REALIP_TOA=off to silence this."


# File descriptors are C ints; anything outside cannot name an open file.
_FD_MIN: Final = -(2**31)
_FD_MAX: Final = 2**31 - 1

# The answers that carry no data, built once.
_UNAVAILABLE: Final = TOAAnswer(TOAStatus.UNAVAILABLE, errno=ENOSYS)
_BAD_FD: Final = TOAAnswer(TOAStatus.ERROR, errno=EBADF)
_FIXED_ANSWERS: Final[dict[int, TOAAnswer]] = {
    EINVAL: TOAAnswer(TOAStatus.NONE, errno=EINVAL),
    EFAULT: TOAAnswer(TOAStatus.NONE, errno=EFAULT),
    ENOPROTOOPT: TOAAnswer(TOAStatus.NO_MODULE, errno=ENOPROTOOPT),
}


def available() -> bool:
    """True when the compiled shim is importable and is the real Linux one.

    Says nothing about the kernel module: only a :func:`lookup` on a
    connected socket tells (:attr:`TOAStatus.NO_MODULE`).
    """
    return _AVAILABLE


def unavailable_reason() -> str | None:
    """Why :func:`lookup` cannot ask the TOA module, and what to do; ``None`` when it can.

    One line for a log, completing "TOA requested but ...": the compiled shim is
    missing (realip was installed from source without a C compiler), could not
    be loaded, or is the stub built off Linux. Each says how to silence it
    (``toa=False``, ``REALIP_TOA=off``), and the first two how to get the shim.
    """
    if _AVAILABLE:
        return None
    consequence = "so NAT64 clients show as their load balancer."
    if isinstance(_SHIM_ERROR, ModuleNotFoundError):
        return (
            "the compiled TOA shim is missing (realip was installed from source without a C compiler), "
            f"{consequence} {_GET_THE_SHIM} {_SILENCE}"
        )
    if _SHIM_ERROR is not None:
        return f"the compiled TOA shim could not be loaded ({_SHIM_ERROR}), {consequence} {_GET_THE_SHIM} {_SILENCE}"
    return f"TOA lookups need Linux (this is {sys.platform}), {consequence} {_SILENCE}"


def lookup(sock: int | SupportsFileno) -> TOAAnswer:
    """Ask the TOA module about one accepted TCP connection.

    ``sock`` is a file descriptor or an object with ``fileno()``; it is only
    read, never closed. OS errors are reported in the answer, never raised
    (a closed socket gives :attr:`TOAStatus.ERROR` with ``EBADF``); see the
    module docstring for the meaning of each outcome. Raises :class:`TypeError`
    only for an argument that is neither an ``int`` nor has ``fileno()``.
    """
    if isinstance(sock, int):
        fd = sock
    else:
        fileno = getattr(sock, "fileno", None)
        if fileno is None:
            raise TypeError(f"lookup() needs a file descriptor or a socket, not {type(sock).__name__}")
        try:
            fd = fileno()
        except (OSError, ValueError):  # ValueError: a closed file object
            return _BAD_FD
    if not _AVAILABLE:
        return _UNAVAILABLE
    if not _FD_MIN <= fd <= _FD_MAX:
        return _BAD_FD

    ffi, lib = _shim.ffi, _shim.lib
    raw_address = ffi.new("unsigned char[16]")
    port = ffi.new("unsigned int *")
    rc: int = lib.realip_toa_lookup(fd, raw_address, port)
    if rc != 0:
        return _FIXED_ANSWERS.get(rc) or TOAAnswer(TOAStatus.ERROR, errno=rc)

    address = IPv6Address(ffi.buffer(raw_address)[:])
    unmapped = address.ipv4_mapped
    return TOAAnswer(TOAStatus.FOUND, unmapped if unmapped is not None else address, int(port[0]))
