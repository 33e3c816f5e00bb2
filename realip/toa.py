"""Ask the kernel TOA module for the real client of one TCP connection.

A layer-4 load balancer (Huawei ELB, Tencent CLB, Alibaba SLB, UCloud, dpvs,
LVS FULLNAT, ...) replaces the client's source address with its own and carries
the real one in a TCP option; the TOA module stores it on the accepted socket
and gives it to user space through one of three interfaces
(``docs/vendors/index.md``), :class:`TOAInterface`:

* the **lookup** ``getsockopt(fd, IPPROTO_IP, 4096)`` (Huawei's NAT64 build,
  dpvs, Tencent's NAT64 module): behind an ``AF_INET`` listener
  ``getpeername()`` keeps reporting the load balancer and the client has to be
  asked for; the compiled shim in :mod:`realip._toa` makes that one call with
  the exact struct the module expects (20 bytes, see ``docs/toa.md``);
* a **rewritten peer**: the module answers ``getpeername()`` itself (IPv4 TOA
  everywhere; NAT64 on ``AF_INET6`` listeners), and the load balancer is only
  left in the kernel's own TCP table (:func:`kernel_peer`);
* **V6VTOA** (Alibaba ``vtoa``, option 249): an ``AF_INET`` socket reports an
  ``AF_INET6`` peer of 28 bytes, which CPython truncates to 16; :func:`peer_name`
  reads it whole.

:func:`lookup` turns the result of the 4096 call into a :class:`TOAAnswer`.
What each outcome of the system call means, as observed on a real kernel:

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
``ENOPROTOOPT``             ``NO_MODULE``           no TOA module with the lookup on this host
                                                    (modules that only rewrite the peer answer
                                                    so too: the connection resolver tells them
                                                    apart by ``/sys/module``)
(shim missing or stub)      ``UNAVAILABLE``         not built, or not Linux: nothing to ask
anything else               ``ERROR``               unexpected (``ENOTCONN`` on a listening or
                                                    unconnected socket, ``EBADF``, ...)
==========================  ======================  ==========================================

Nothing here decides whom to believe: the modules accept the option from *any*
sender, so the caller must check the peer that really connected (the socket
peer, or :func:`kernel_peer` where the module rewrote it) against its trusted
networks. Nothing is cached either, except the last dump of the kernel's TCP
table that :func:`kernel_peer` searches.
"""

from __future__ import annotations

import enum
import importlib
import os
import socket
import struct
import sys
from dataclasses import dataclass
from errno import (
    EACCES,
    EAFNOSUPPORT,
    EBADF,
    EFAULT,
    EINVAL,
    ENOENT,
    ENOPROTOOPT,
    ENOSYS,
    ENOTCONN,
    EOPNOTSUPP,
    EPERM,
    EPROTO,
    EPROTONOSUPPORT,
    ESRCH,
)
from ipaddress import IPv4Address, IPv6Address
from itertools import count
from typing import Any, Final, Protocol

from .address import ip_text, unmap

__all__ = [
    "MODULE_NAMES",
    "SupportsFileno",
    "TOAAnswer",
    "TOAInterface",
    "TOAStatus",
    "VirtualServer",
    "available",
    "kernel_peer",
    "loaded_modules",
    "lookup",
    "peer_name",
    "socket_family",
    "unavailable_reason",
    "virtual_server",
]


class TOAStatus(enum.Enum):
    """What the TOA module said about one connection."""

    #: The module returned the NAT64 client (``address`` and ``port`` are set).
    FOUND = "found"
    #: The module is loaded but gave no client through the lookup (``EINVAL`` or
    #: ``EFAULT``; or ``ENOPROTOOPT`` from a module that only rewrites the peer,
    #: in the answers of :class:`~realip.connection.ConnectionResolver`).
    NONE = "none"
    #: No TOA module with the lookup is loaded on this host (``ENOPROTOOPT``).
    NO_MODULE = "no-module"
    #: The shim is not compiled, or this is not Linux: the module cannot be asked.
    UNAVAILABLE = "unavailable"
    #: Any other error (``ENOTCONN``, ``EBADF``, ...); never raised, only reported.
    ERROR = "error"


class TOAInterface(enum.Enum):
    """How a TOA module gave one connection's client to user space."""

    #: ``getsockopt(IPPROTO_IP, 4096)`` returned it; the socket peer is the load
    #: balancer, seen on the wire (Huawei's NAT64 build, dpvs, Tencent NAT64).
    LOOKUP = "lookup"
    #: The module rewrote ``getpeername()``: the server already reported the
    #: client, and the load balancer is only in the kernel's TCP table (IPv4 TOA
    #: of every module; NAT64 on an ``AF_INET6`` listener).
    REWRITTEN_PEER = "rewritten-peer"
    #: Alibaba ``vtoa``'s option 249: an ``AF_INET`` socket reports an ``AF_INET6``
    #: peer of 28 bytes, which CPython (and so every Python server) truncates to
    #: 16; realip read it whole.
    V6VTOA = "v6vtoa"


@dataclass(frozen=True, slots=True)
class VirtualServer:
    """The virtual server a connection was made to, from Alibaba ``vtoa``
    (``getsockopt(IPPROTO_IP, 1345)`` or ``1347``): the VPC id, the VIP and its port.

    ``vpc_id`` is ``0`` when the connection carried a VIP only (option 250/8) and
    ``0xffffff`` when the module could not keep it; ``port`` is ``0`` for an IPv6
    VIP (option 249 carries none).
    """

    vpc_id: int
    address: IPv4Address | IPv6Address
    port: int


@dataclass(frozen=True, slots=True)
class TOAAnswer:
    """The result of one :func:`lookup`, and what
    :class:`~realip.connection.ConnectionResolver` learnt about the connection
    besides (:attr:`interface`, :attr:`balancer`, :attr:`virtual_server`).

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
    interface: TOAInterface | None = None
    """How the module gave this connection's client, when it gave one; ``None``
    from :func:`lookup` except for ``FOUND``, and whenever the client is the
    peer as it connected. :class:`~realip.connection.ConnectionResolver` sets
    it for every interface."""
    balancer: tuple[str, int] | None = None
    """Who really connected (the load balancer, or whoever wrote the option),
    when known: the socket peer for a lookup, the kernel's TCP table
    (:func:`kernel_peer`) for a rewritten peer. ``None``: not known."""
    virtual_server: VirtualServer | None = None
    """Alibaba ``vtoa``'s virtual server for this connection, when asked
    (``toa_vtoa_metadata``) and the module had one."""

    @property
    def rewritten_by_kernel(self) -> bool:
        """The module has rewritten this socket's ``getpeername()`` itself.

        True when the lookup answered ``EFAULT`` (the module holds an option for
        this connection but serves it through the peer name: IPv4 TOA, or NAT64
        on an ``AF_INET6`` listener), and for every answer whose
        :attr:`interface` is a rewritten peer or V6VTOA. The peer name then
        shows the option's address, which nothing on the wire vouched for; who
        really connected is :attr:`balancer`, when the kernel's table had it.
        """
        interface = self.interface
        if interface is None:
            return self.errno == EFAULT
        return interface is not TOAInterface.LOOKUP

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


# --------------------------------------------------------------------------- the other interfaces

#: Names under ``/sys/module`` of the TOA modules in the field (``docs/vendors/index.md``):
#: ``toa`` (Huawei ``elb-toa`` both branches, dpvs, UCloud, LVS FULLNAT), ``vtoa``
#: (Alibaba SLB/ALB/Anti-DDoS), ``tcp_toa`` (Alibaba CDN), ``tgw_toa`` (Tencent CLB).
MODULE_NAMES: Final = ("toa", "vtoa", "tcp_toa", "tgw_toa")

#: Where loaded modules show up; tests point it at a fake tree.
_SYS_MODULE = "/sys/module"

#: Alibaba vtoa's virtual-server calls (level IPPROTO_IP): 1345 answers for an IPv4
#: VIP (options 252/20 and 250/8), 1347 for the IPv6 VIP of option 249.
VTOA_SO_GET_VS: Final = 1345
VTOA_SO_GET_VS4RDS: Final = 1346
HYBRID_VTOA_SO_GET_VS: Final = 1347


def loaded_modules(root: str | None = None) -> tuple[str, ...]:
    """The TOA modules loaded on this host, by their directory in ``/sys/module``.

    A few ``stat`` calls: cheap, but a caller on a hot path should keep the
    answer for a while (:class:`~realip.connection.ConnectionResolver` checks
    once a minute). Containers see the host's modules there too.
    """
    base = _SYS_MODULE if root is None else root
    return tuple(name for name in MODULE_NAMES if os.path.isdir(f"{base}/{name}"))


def _fd_of(sock: int | SupportsFileno) -> int:
    """The descriptor of ``sock``; :class:`OSError` (``EBADF``) when it has none."""
    if isinstance(sock, int):
        fd = sock
    else:
        fileno = getattr(sock, "fileno", None)
        if fileno is None:
            raise TypeError(f"expected a file descriptor or a socket, not {type(sock).__name__}")
        try:
            fd = fileno()
        except ValueError:  # a closed file object
            raise OSError(EBADF, os.strerror(EBADF)) from None
    if not _FD_MIN <= fd <= _FD_MAX:
        raise OSError(EBADF, os.strerror(EBADF))
    if not _AVAILABLE:
        raise OSError(ENOSYS, "realip's TOA shim is not available")
    return fd


def _check(rc: int) -> None:
    if rc != 0:
        raise OSError(rc, os.strerror(rc))


def _decode_sockaddr(raw: bytes, length: int) -> tuple[int, str, int]:
    """``(family, canonical host, port)`` of a ``sockaddr_in`` / ``sockaddr_in6``
    (IPv4-mapped addresses unwrapped, no zone id)."""
    family = int.from_bytes(raw[0:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET and length >= 8:
        return family, socket.inet_ntoa(raw[4:8]), port
    if family == socket.AF_INET6 and length >= 24:
        return family, ip_text(unmap(IPv6Address(raw[8:24]))), port
    raise OSError(EPROTO, f"not an IP socket address (family {family}, {length} bytes)")


def _socket_name(fd: int, peer: bool) -> tuple[int, str, int, int]:
    """``(family, host, port, length the kernel reported)`` of one end of the socket."""
    ffi, lib = _shim.ffi, _shim.lib
    size = int(lib.realip_sockaddr_size())
    buf = ffi.new("unsigned char[]", size)
    length = ffi.new("unsigned int *", size)
    _check(lib.realip_socket_name(fd, 1 if peer else 0, buf, length))
    reported = int(length[0])
    family, host, port = _decode_sockaddr(ffi.buffer(buf, size)[:], min(reported, size))
    return family, host, port, reported


def peer_name(sock: int | SupportsFileno) -> tuple[str, int]:
    """``getpeername()`` read into a buffer large enough for any address family.

    Where Alibaba's ``vtoa`` answers an ``AF_INET`` socket with a 28-byte
    ``sockaddr_in6`` (option 249, V6VTOA), CPython's own ``getpeername()`` and
    ``accept()`` keep 16 bytes and report an IPv6 address whose last 8 bytes are
    garbage; this reads all of it. The host is canonical text (IPv4-mapped
    unwrapped). Raises :class:`OSError` (``ENOTCONN`` for a connection already
    reset, ``ENOSYS`` without the shim).
    """
    _, host, port, _ = _socket_name(_fd_of(sock), peer=True)
    return host, port


def socket_family(sock: int | SupportsFileno) -> int:
    """The socket's own address family (``SO_DOMAIN``): ``AF_INET`` or ``AF_INET6``
    for a TCP socket, whatever family its peer name is in."""
    fd = _fd_of(sock)
    out = _shim.ffi.new("int *")
    _check(_shim.lib.realip_socket_domain(fd, out))
    return int(out[0])


def virtual_server(sock: int | SupportsFileno) -> VirtualServer | None:
    """Alibaba ``vtoa``: the virtual server this connection was made to, or ``None``.

    Asks ``getsockopt(IPPROTO_IP, 1345)`` (12 bytes: an IPv4 VIP, from options
    252/20 or 250/8), then ``1347`` (24 bytes: the IPv6 VIP of option 249).
    ``None`` when neither has one (``ESRCH``: also after a lone 254/8), or without
    the module (``ENOPROTOOPT``). Raises :class:`OSError` for anything else.
    """
    fd = _fd_of(sock)
    ffi, lib = _shim.ffi, _shim.lib
    vid, vip = ffi.new("unsigned int *"), ffi.new("unsigned char[16]")
    family, port = ffi.new("int *"), ffi.new("unsigned int *")
    for optname in (VTOA_SO_GET_VS, HYBRID_VTOA_SO_GET_VS):
        rc = lib.realip_vtoa_virtual_server(fd, optname, vid, vip, family, port)
        if rc == ESRCH:
            continue
        if rc == ENOPROTOOPT:
            return None
        _check(rc)
        raw = ffi.buffer(vip, 16)[:]
        address = IPv4Address(raw[:4]) if family[0] == socket.AF_INET else unmap(IPv6Address(raw))
        return VirtualServer(int(vid[0]), address, int(port[0]))
    return None


# The kernel's TCP table. getpeername() goes through the protocol's getname
# operation, which the modules hook; sock_diag (what `ss` reads) and
# /proc/net/tcp read the socket's own addresses, which no module touches.

_NETLINK_SOCK_DIAG: Final = 4
_SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST_DUMP: Final = 0x1 | 0x300
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
#: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING: an accepted connection's states.
_LIVE_STATES: Final = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11)
_HEADER: Final = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST_HEAD: Final = struct.Struct("=BBBBI")  # struct inet_diag_req_v2 up to its id
# Offsets from the start of a message (16 bytes of nlmsghdr, then struct inet_diag_msg).
_AT_FAMILY, _AT_SPORT, _AT_DPORT, _AT_DST, _AT_COOKIE = 16, 20, 22, 40, 60
_MESSAGE_MIN: Final = 16 + 72
_DUMP_LIMIT: Final = 64 << 20  # bytes: a table larger than this is not searched
_RECV_SIZE: Final = 1 << 17
#: Errors that say netlink sock_diag is not usable here at all (then /proc/net/tcp is read).
_NETLINK_REFUSED: Final = frozenset((EACCES, EPERM, EAFNOSUPPORT, EPROTONOSUPPORT, EOPNOTSUPP, ENOENT, EINVAL))


class _Dump:
    """One sock_diag dump of a listener's connections, kept for the next lookups:
    a connection accepted just after another one was already in it (even still
    in the accept queue), found by its cookie, which is never reused."""

    __slots__ = ("data", "family", "port", "seq")

    def __init__(self, family: int, port: int, seq: int, data: bytes) -> None:
        self.family, self.port, self.seq, self.data = family, port, seq, data

    def find(self, cookie: bytes) -> tuple[str, int] | None:
        data = self.data
        at = data.find(cookie)
        while at != -1:
            start = at - _AT_COOKIE
            if start >= 0 and len(data) >= start + _MESSAGE_MIN:
                length, kind, _, seq, _ = _HEADER.unpack_from(data, start)
                if (
                    kind == _SOCK_DIAG_BY_FAMILY
                    and seq == self.seq
                    and length >= _MESSAGE_MIN
                    and data[start + _AT_FAMILY] == self.family
                    and int.from_bytes(data[start + _AT_SPORT : start + _AT_SPORT + 2], "big") == self.port
                ):
                    port = int.from_bytes(data[start + _AT_DPORT : start + _AT_DPORT + 2], "big")
                    raw = data[start + _AT_DST : start + _AT_DST + (4 if self.family == socket.AF_INET else 16)]
                    host = socket.inet_ntoa(raw) if len(raw) == 4 else ip_text(unmap(IPv6Address(raw)))
                    return host, port
            at = data.find(cookie, at + 1)
        return None


class _KernelTable:
    """sock_diag through netlink, with ``/proc/net/tcp`` as the fallback."""

    def __init__(self) -> None:
        self.last: _Dump | None = None
        self.netlink = True  # cleared for good when netlink sock_diag is not usable here
        self._seq = count(1)

    def peer(self, fd: int) -> tuple[str, int] | None:
        family, _, local_port, _ = _socket_name(fd, peer=False)
        cookie_out = _shim.ffi.new("unsigned long long *")
        if self.netlink and _shim.lib.realip_socket_cookie(fd, cookie_out) == 0:
            value = int(cookie_out[0])
            cookie = struct.pack("=II", value & 0xFFFFFFFF, value >> 32)  # __u32 idiag_cookie[2]
            last = self.last
            if last is not None and last.family == family and last.port == local_port:
                found = last.find(cookie)
                if found is not None:
                    return found
            try:
                dump = self._dump(family, local_port)
            except OSError as exc:
                if exc.errno in _NETLINK_REFUSED:
                    self.netlink = False  # for good: a sandbox, a seccomp filter, an old kernel
            else:
                self.last = dump
                return dump.find(cookie)
        return _proc_peer(fd, family)

    def _dump(self, family: int, port: int) -> _Dump:
        seq = next(self._seq) & 0xFFFFFFFF
        request = (
            _REQUEST_HEAD.pack(family, socket.IPPROTO_TCP, 0, 0, _LIVE_STATES)
            + port.to_bytes(2, "big")  # idiag_sport: this listener's connections only
            + bytes(2 + 16 + 16 + 4)  # dport, src, dst, if: any
            + b"\xff" * 8  # INET_DIAG_NOCOOKIE
        )
        message = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, seq, 0)
        chunks: list[bytes] = []
        total = 0
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
            netlink.settimeout(2.0)
            netlink.sendto(message + request, (0, 0))
            while True:
                chunk = netlink.recv(_RECV_SIZE)
                if len(chunk) >= _HEADER.size:
                    _, kind, _, _, _ = _HEADER.unpack_from(chunk, 0)
                    if kind == _NLMSG_ERROR:
                        code = -int.from_bytes(chunk[16:20], sys.byteorder, signed=True)
                        raise OSError(code or EPROTO, "sock_diag refused the dump")
                chunks.append(chunk)
                total += len(chunk)
                if _ends_with_done(chunk, seq):
                    break
                if total > _DUMP_LIMIT or not chunk:
                    raise OSError(EPROTO, "sock_diag dump too large")
        return _Dump(family, port, seq, b"".join(chunks))


def _ends_with_done(chunk: bytes, seq: int) -> bool:
    """Whether this datagram ends with the dump's NLMSG_DONE (20 bytes: a header and an int)."""
    if len(chunk) < 20:
        return False
    length, kind, _, done_seq, _ = _HEADER.unpack_from(chunk, len(chunk) - 20)
    return bool(length == 20 and kind == _NLMSG_DONE and done_seq == seq)


def _proc_peer(fd: int, family: int) -> tuple[str, int] | None:
    """The peer of socket ``fd`` in ``/proc/net/tcp`` or ``tcp6``, found by its inode."""
    inode = b"%d" % os.fstat(fd).st_ino
    path = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    with open(path, "rb") as table:
        data = table.read()
    needle = b" " + inode + b" "
    at = data.find(needle)
    while at != -1:
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        fields = data[start : end if end != -1 else len(data)].split()
        if len(fields) > 9 and fields[9] == inode:
            address, _, port = fields[2].partition(b":")
            raw = bytes.fromhex(address.decode("ascii"))
            # Each 32-bit word is printed in the host's byte order.
            words = b"".join(
                int.from_bytes(raw[i : i + 4], "big").to_bytes(4, sys.byteorder) for i in range(0, len(raw), 4)
            )
            host = socket.inet_ntoa(words) if len(words) == 4 else ip_text(unmap(IPv6Address(words)))
            return host, int(port, 16)
        at = data.find(needle, at + 1)
    return None


_TABLE: Final = _KernelTable()


def kernel_peer(sock: int | SupportsFileno) -> tuple[str, int] | None:
    """Who really connected: the peer of this connection in the kernel's own TCP table.

    ``getpeername()`` goes through the hook every TOA module installs; the
    table that ``ss`` and ``/proc/net/tcp`` read keeps the address the
    connection came from, the load balancer's. Read with one sock_diag dump
    (netlink) of this listener's connections, kept so that the connections
    already in it cost no second dump, or from ``/proc/net/tcp`` where netlink
    is not usable. A dump walks the kernel's whole connection hash table:
    ``docs/vendors/index.md`` has its cost. ``(host, port)`` in canonical text,
    or ``None`` when the table has no such connection (it was reset). Raises
    :class:`OSError` for a descriptor that is no socket, or without the shim.
    """
    return _TABLE.peer(_fd_of(sock))
