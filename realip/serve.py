"""``realip serve``: uvicorn on truly dual-stack sockets, with realip's protocols.

::

    realip serve app:app --bind '[::]:8000'
    realip serve app:app --bind 0.0.0.0:8000 --bind '[::1]:8000' --workers 4

A single uvicorn process given ``--host ::`` binds through asyncio, which sets
``IPV6_V6ONLY``: IPv4 clients are refused (see ``docs/servers.md``). This
command binds each ``--bind`` address itself: an IPv6 socket with
``IPV6_V6ONLY`` off (so ``[::]`` takes IPv4 clients too, as
``::ffff:a.b.c.d``) or an IPv4 socket, both with ``SO_REUSEADDR``, and hands
them to uvicorn with realip's HTTP and WebSocket protocols
(:mod:`realip.uvicorn`) and uvicorn's own proxy headers off. Every connection
then gets its connection-level answer (mapped IPv4 unwrapped, TOA, PROXY
protocol) before the app runs; forwarding headers still need
:class:`realip.RealIPMiddleware` in the app. Options come from the same
``REALIP_*`` variables as everywhere else (:mod:`realip.config`), checked
before anything is bound.

This module imports uvicorn only when the server starts, so ``realip doctor``
and ``realip --help`` work without it.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import options_from_env
from .errors import ConfigError

__all__ = ["Bind", "BindError", "add_parser", "listen", "main", "parse_bind", "serve"]

#: uvicorn's ``--log-level`` values.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
#: The listen() backlog, uvicorn's default.
BACKLOG = 2048
#: What to write, shown in every --bind error.
BIND_EXAMPLES = "write '[::]:8000' (IPv4 and IPv6), 0.0.0.0:8000 (IPv4), 127.0.0.1:8000 or '[::1]:8000'"


@dataclass(frozen=True)
class Bind:
    """One ``--bind`` address: an IP literal and a port (0: any free port)."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    text: str
    """As it was written, for messages."""

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.ip.version == 6 else socket.AF_INET

    @property
    def dual_stack(self) -> bool:
        """``[::]``: one socket for IPv4 and IPv6 clients."""
        return self.ip.version == 6 and self.ip.is_unspecified


def parse_bind(text: str) -> Bind:
    """Parse ``0.0.0.0:8000``, ``[::]:8000``, ``[::1]:0``, ``127.0.0.1:0``.

    Raises :class:`argparse.ArgumentTypeError` naming ``text`` and what to
    write instead; host names are refused (an address family must be chosen).
    """

    def bad(why: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(f"{text!r}: {why}; {BIND_EXAMPLES}")

    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise bad("no closing ']'")
        if not rest:
            raise bad("no port after the address")
        if not rest.startswith(":"):
            raise bad("expected ':PORT' after ']'")
        port_text = rest[1:]
    elif text.count(":") > 1:
        raise bad("an IPv6 address needs brackets, as in '[::]:8000'")
    elif ":" in text:
        host, _, port_text = text.partition(":")
    elif text.isdigit():
        raise bad("an address is needed, not only a port")
    else:
        raise bad("no port")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise bad(f"{host!r} is not an IP address (host names are not accepted)") from None
    if text.startswith("[") and ip.version != 6:
        raise bad("brackets are for IPv6 addresses only")
    if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535):
        raise bad(f"{port_text!r} is not a port (0 to 65535; 0 picks a free one)")
    return Bind(ip, int(port_text), text)


def _app(text: str) -> str:
    module, sep, attribute = text.partition(":")
    if not (sep and module and attribute):
        raise argparse.ArgumentTypeError(f"{text!r}: write MODULE:ATTRIBUTE, e.g. app:app or project.asgi:application")
    return text


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 512):
        raise argparse.ArgumentTypeError(f"{text!r}: write a number of processes from 1 to 512, e.g. --workers 4")
    return int(text)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``commands`` (from ``add_subparsers()``)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="run an ASGI app under uvicorn on dual-stack sockets, with realip's protocols",
        description=(
            "Run an ASGI app under uvicorn with realip's HTTP and WebSocket protocols (realip.uvicorn) and uvicorn's "
            "proxy headers off. Each --bind is a socket bound here: '[::]:PORT' takes IPv4 and IPv6 clients "
            "(IPV6_V6ONLY off, whatever net.ipv6.bindv6only says), IPv4 ones arriving as ::ffff:a.b.c.d and unwrapped "
            "by realip. Options come from REALIP_* variables. Needs uvicorn: pip install 'realip[uvicorn]'."
        ),
    )
    parser.add_argument(
        "app", metavar="MODULE:ATTRIBUTE", type=_app, help="the ASGI app, e.g. app:app or project.asgi:application"
    )
    parser.add_argument(
        "--bind",
        metavar="ADDRESS:PORT",
        action="append",
        type=parse_bind,
        required=True,
        help="where to listen, may be repeated: '[::]:8000' (IPv4 and IPv6), 0.0.0.0:8000, '[::1]:8000', 127.0.0.1:0",
    )
    parser.add_argument("--workers", type=_workers, default=1, help="worker processes (default: 1)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="uvicorn's log level (default: info)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log each request")
    parser.add_argument(
        "--app-dir", default=".", help="directory added to the module search path (default: the current one)"
    )
    return parser


class BindError(OSError):
    """A ``--bind`` address could not be listened on; the message says what to do."""


def listen(bind: Bind, taken: Sequence[Bind] = ()) -> socket.socket:
    """A listening socket for ``bind``: ``IPV6_V6ONLY`` off for IPv6, ``SO_REUSEADDR`` on.

    ``taken``: the addresses bound before this one, to explain a clash (an
    IPv4 bind on the port of ``[::]``, which already takes IPv4 clients).
    Raises :class:`BindError`.
    """
    try:
        sock = socket.socket(bind.family, socket.SOCK_STREAM)
    except OSError as exc:
        hint = "; this host has no IPv6: use 0.0.0.0:PORT" if exc.errno == errno.EAFNOSUPPORT else ""
        raise BindError(exc.errno, f"cannot listen on {bind.text}: {exc.strerror}{hint}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if bind.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((str(bind.ip), bind.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        hint = ""
        clash = next((t for t in taken if t.port == bind.port and (t.dual_stack or bind.dual_stack)), None)
        if exc.errno == errno.EADDRINUSE and clash is not None:
            drop = bind if clash.dual_stack else clash
            hint = f" ('[::]:{bind.port}' takes IPv4 and IPv6 clients on every address: leave out {drop.text})"
        raise BindError(exc.errno, f"cannot listen on {bind.text}: {exc.strerror}{hint}") from None
    return sock


def _describe(bind: Bind, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if bind.family == socket.AF_INET6 else f"http://{host}:{port}"
    if bind.dual_stack:
        return f"{url} (IPv4 and IPv6 clients)"
    return f"{url} (IPv{bind.ip.version} only)"


def serve(
    app: str,
    binds: Sequence[Bind | str],
    *,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = True,
    app_dir: str = ".",
) -> int:
    """Check the ``REALIP_*`` options, bind, and run uvicorn until it stops.

    ``binds`` are :class:`Bind` or their text (``"[::]:8000"``). Returns the
    exit status: 0 after a normal shutdown, 1 when an address is bad or cannot
    be bound, a ``REALIP_*`` option is bad or uvicorn is missing (each said on
    stderr), 3 when the app failed to start (uvicorn's own code).
    """

    try:
        parsed = [parse_bind(b) if isinstance(b, str) else b for b in binds]
    except argparse.ArgumentTypeError as exc:
        print(f"realip serve: --bind {exc}", file=sys.stderr)
        return 1
    if not parsed:
        print("realip serve: nothing to listen on: give --bind '[::]:8000' (IPv4 and IPv6)", file=sys.stderr)
        return 1
    try:
        options_from_env()  # a bad REALIP_* value fails here, naming the variable, not at the first request
    except ConfigError as exc:  # its message names the variable ("realip: REALIP_TOA_PEERS: ...")
        print(exc, file=sys.stderr)
        return 1
    try:
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        from . import uvicorn as _protocols  # noqa: F401 - fails early if realip.uvicorn cannot load
    except ImportError as exc:
        print(f"realip serve needs uvicorn ({exc}): pip install 'realip[uvicorn]'", file=sys.stderr)
        return 1

    sockets: list[socket.socket] = []
    try:
        for bind in parsed:
            sockets.append(listen(bind, taken=parsed[: len(sockets)]))
    except BindError as exc:
        for sock in sockets:
            sock.close()
        print(f"realip serve: {exc.strerror}", file=sys.stderr)
        return 1

    app_path = os.path.abspath(app_dir)
    if app_path not in sys.path:
        sys.path.insert(0, app_path)
    first = parsed[0]
    config = uvicorn.Config(
        app,
        host=str(first.ip),  # only for uvicorn's own messages: the sockets are already bound
        port=sockets[0].getsockname()[1],
        http="realip.uvicorn:AutoHTTPProtocol",
        ws="realip.uvicorn:AutoWebSocketsProtocol",
        proxy_headers=False,
        log_level=log_level,
        access_log=access_log,
        workers=workers,
        backlog=BACKLOG,
    )  # configures uvicorn's logging
    log = logging.getLogger("uvicorn.error")
    for bind, sock in zip(parsed, sockets, strict=True):
        log.info("realip serve: listening on %s", _describe(bind, sock))
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            # Older uvicorn releases take the worker's target explicitly; newer ones build it themselves.
            if "target" in inspect.signature(Multiprocess).parameters:
                Multiprocess(config, target=server.run, sockets=sockets).run()  # type: ignore[call-arg]
            else:
                Multiprocess(config, sockets=sockets).run()
            return 0
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
    return 0 if server.started else 3


def main(args: argparse.Namespace) -> int:
    """Run ``realip serve`` with the arguments :func:`add_parser` declared."""
    return serve(
        args.app,
        args.bind,
        workers=args.workers,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        app_dir=args.app_dir,
    )
