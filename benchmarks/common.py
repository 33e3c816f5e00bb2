"""What the parts of the benchmark share: the trivial apps and yardsticks, the requests,
the timing, the goals and the tables."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ("keep-alive", "pool", "new conn", "cold")
#: The "pool" column: a proxy's kept-alive connections, each request on the next one in turn.
POOL_SIZE = 32
PROXY = "127.0.0.2"  # the trusted proxy the requests come from (real loopback connections from it)
HOP = "10.0.0.1"  # the trusted proxy before it, as the header names it
CLIENT = "203.0.113.5"  # the client they relay
#: Trusted by realip (``trusted_proxies``) and ProxyHeadersMiddleware (``trusted_hosts``) alike.
TRUSTED = f"{PROXY}, 10.0.0.0/8"

# --------------------------------------------------------------------------- the apps


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """The trivial ASGI app: reads the client, answers nothing."""
    scope["client"]


BODY = [b"ok"]


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The trivial WSGI app: reads the client, returns a constant body."""
    environ["REMOTE_ADDR"]
    return BODY


class PassThrough:
    """The baseline every overhead is measured above: the thinnest ASGI middleware there is."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class PassThroughWSGI:
    """The WSGI baseline: the thinnest WSGI middleware there is."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


PEERS_KEPT = 4096  # the yardsticks' dict is emptied at this size, like a bounded cache


class RewriteOnly:
    """The rewrite-only yardstick, not a product: a dict lookup and the write.

    Looks the peer up in a dict, writes ``scope["client"]`` and publishes the answer in
    ``scope["extensions"]``; no checks, no headers, naive unwrapping. What realip's
    unwrap-only path is compared with.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.peers: dict[Any, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope["client"]
        client = self.peers.get(peer)
        if client is None:
            if len(self.peers) >= PEERS_KEPT:
                self.peers.clear()
            client = self.peers[peer] = (peer[0].removeprefix("::ffff:"), peer[1])
        scope["client"] = client
        scope["extensions"] = {"realip": client}
        await self.app(scope, receive, send)


class RewriteOnlyWSGI:
    """The WSGI yardstick: a dict lookup and the write of ``REMOTE_ADDR``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.peers: dict[Any, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = (environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT"))
        client = self.peers.get(peer)
        if client is None:
            if len(self.peers) >= PEERS_KEPT:
                self.peers.clear()
            client = self.peers[peer] = str(peer[0]).removeprefix("::ffff:")
        environ["REMOTE_ADDR"] = client
        environ["realip"] = client
        return self.app(environ, start_response)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    return None


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


# --------------------------------------------------------------------------- requests

HEADERS = [
    (b"host", b"app.example.com"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-US,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"cookie", b"session=6f1ed002ab5595859014ebf0951522d9"),
]

WSGI_BASE = {
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
    "SERVER_SOFTWARE": "gunicorn/23.0.0",
    "REQUEST_METHOD": "GET",
    "QUERY_STRING": "",
    "RAW_URI": "/",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "PATH_INFO": "/",
    "SCRIPT_NAME": "",
}

CONNECTION = "bench.connection"  # scope key carrying (socket, peer) for the TOA rows


def fresh(text: str) -> str:
    """An equal but distinct str, as a server parsing a new request makes (its hash is not cached)."""
    return (text + " ")[:-1]


class Request:
    """What one request is made of; turned into a fresh scope or environ for every variant.

    ``client`` is the socket peer as the server reports it and ``sock`` the connection's
    socket (``environ["gunicorn.socket"]``; ``scope[CONNECTION]`` for the TOA rows). Requests
    of one connection share both (uvicorn hands every scope of a connection the same
    tuple); a new connection has its own, with a new host text.
    """

    __slots__ = ("client", "headers", "sock")

    def __init__(self, client: tuple[str, int], headers: list[tuple[str, str]], sock: Any = None) -> None:
        self.client = client
        self.headers = headers
        self.sock = sock

    def scope(self) -> dict[str, Any]:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": self.client,
            "scheme": "http",
            "root_path": "",
            "headers": [*HEADERS, *((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers)],
            "state": {},
            "method": "GET",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
        }
        if self.sock is not None:
            scope[CONNECTION] = (self.sock, self.client)
        return scope

    def environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = dict(WSGI_BASE)
        for raw_name, raw_value in HEADERS:
            environ["HTTP_" + raw_name.decode().upper().replace("-", "_")] = fresh(raw_value.decode("latin-1"))
        for name, value in self.headers:
            environ["HTTP_" + name.upper().replace("-", "_")] = fresh(value)
        if self.sock is not None:
            environ["gunicorn.socket"] = self.sock  # the connection's socket, as gunicorn hands it over
        environ["REMOTE_ADDR"] = self.client[0]
        environ["REMOTE_PORT"] = str(self.client[1])  # gunicorn formats it per request
        return environ


class Serial:
    """Never-repeating ports and addresses for the new-connection and cold columns.

    Ports cycle through 64512 values and addresses through 198.18.0.0/15 (131072):
    a key comes back only after far more than a 4096-entry cache holds.
    """

    def __init__(self) -> None:
        self.i = 0

    def next(self) -> int:
        self.i += 1
        return self.i

    @staticmethod
    def port(i: int) -> int:
        return 1024 + i % 64512

    @staticmethod
    def address(i: int) -> str:
        i %= 131072
        return f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"

    @staticmethod
    def loopback(i: int) -> str:
        """A loopback address to connect from (any of 127.0.0.0/8 works on Linux), never 127.0.0.x."""
        i %= 254 * 65536
        return f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


@dataclass
class Connection:
    """One accepted TCP connection: the server's socket, the peer it reports, and the other end."""

    sock: socket.socket
    peer: tuple[str, int]
    other_end: socket.socket

    def close(self) -> None:
        self.sock.close()
        self.other_end.close()


class Listener:
    """A loopback listener whose connections are real, as a server accepts them.

    ``dual_stack``: an ``[::]`` listener with ``IPV6_V6ONLY`` off, so IPv4 peers are
    reported as ``::ffff:a.b.c.d`` (what realip unwraps), as on a dual-stack deployment.
    """

    def __init__(self, dual_stack: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET6 if dual_stack else socket.AF_INET, socket.SOCK_STREAM)
        if dual_stack:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::" if dual_stack else "127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = int(self.sock.getsockname()[1])

    def connect_from(self, source: str) -> Connection:
        other_end = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # RST on close: no TIME_WAIT pile-up over thousands of connections.
        other_end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        other_end.bind((source, 0))
        other_end.connect(("127.0.0.1", self.port))
        sock, peer = self.sock.accept()
        return Connection(sock, (str(peer[0]), int(peer[1])), other_end)

    def close(self) -> None:
        self.sock.close()


def connections_possible() -> int:
    """How many connections (two descriptors each) this process can hold at once, after raising
    its open-file limit to the hard limit: a batch of new connections holds thousands."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else hard
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return max(0, (soft - 256) // 2)


def xff_value(entries: int, client: str = CLIENT) -> str:
    """``client`` then ``entries - 1`` trusted proxies (10.0.x.y), as appending proxies write it.
    (2 entries: ``203.0.113.5, 10.0.0.1``.)"""
    return ", ".join([client, *(f"10.0.{i >> 8}.{i & 255}" for i in range(1, entries))])


# --------------------------------------------------------------------------- timing

#: The measuring thread's CPU time, in ns: time the process spends descheduled (other
#: processes on a shared machine) is not counted, as end to end counts server CPU-seconds.
clock = time.thread_time_ns


def time_asgi(app: Any, scopes: list[dict[str, Any]]) -> float:
    """ns per request of ``await app(scope, ...)`` over ``scopes`` (nothing suspends: no event loop)."""

    async def drive() -> None:
        for scope in scopes:
            await app(scope, receive, send)

    coroutine = drive()
    start = clock()
    try:
        coroutine.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover - an app that suspended: not what is measured here
        raise RuntimeError("an ASGI app suspended")
    return (clock() - start) / len(scopes)


def time_wsgi(app: Any, environs: list[dict[str, Any]]) -> float:
    start = clock()
    for environ in environs:
        app(environ, start_response)
    return (clock() - start) / len(environs)


def time_requests(interface: str, app: Any, requests: list[Request]) -> float:
    """ns per request of ``app`` over freshly built scopes (``"asgi"``) or environs (``"wsgi"``),
    with the garbage collector off while timing; building them is not timed."""
    if interface == "asgi":
        scopes = [r.scope() for r in requests]
        timer: Callable[[], float] = lambda: time_asgi(app, scopes)  # noqa: E731
    else:
        environs = [r.environ() for r in requests]
        timer = lambda: time_wsgi(app, environs)  # noqa: E731
    gc.collect()
    gc.disable()
    try:
        return timer()
    finally:
        gc.enable()


def answer(interface: str, app: Any, request: Request) -> str:
    """The client address ``app`` leaves for the application on ``request``."""
    if interface == "asgi":
        scope = request.scope()
        coroutine = app(scope, receive, send)
        with contextlib.suppress(StopIteration):
            coroutine.send(None)
        client = scope["client"]
        return str(client[0]) if client else "-"
    environ = request.environ()
    app(environ, start_response)
    return str(environ["REMOTE_ADDR"])


def paired_overhead(variant: list[float], baseline: list[float]) -> float:
    """The median over rounds of (variant - baseline), each pair timed in the same round.

    A pair shares whatever the machine was doing during its round; the median ignores
    the rounds something else disturbed.
    """
    return statistics.median(v - b for v, b in zip(variant, baseline, strict=True))


def pin_to_one_cpu() -> None:
    """Keep this process on one CPU: no migration in the middle of a timed batch."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def quiet_realip_log() -> None:
    """Hostile and garbage rows make realip warn (rate-limited): not this benchmark's output."""
    import logging

    log = logging.getLogger("realip")
    log.addHandler(logging.NullHandler())
    log.propagate = False


# --------------------------------------------------------------------------- goals


@dataclass
class Goal:
    """One goal of issue #11: ``realip / reference`` against ``limit`` (at most, or at least)."""

    name: str
    realip: float
    reference: float
    limit: float
    at_least: bool = False
    unit: str = "ns"

    @property
    def ratio(self) -> float:
        return self.realip / self.reference if self.reference else float("inf")

    @property
    def met(self) -> bool:
        return self.ratio >= self.limit if self.at_least else self.ratio <= self.limit

    def row(self) -> list[str]:
        value = fmt_ns if self.unit == "ns" else fmt_rate
        return [
            self.name,
            value(self.realip),
            value(self.reference),
            f"{self.ratio:.2f}",
            f"{'>=' if self.at_least else '<='} {self.limit:.2f}",
            "pass" if self.met else "MISS",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "realip": self.realip,
            "reference": self.reference,
            "ratio": self.ratio,
            "limit": self.limit,
            "at_least": self.at_least,
            "met": self.met,
        }


def goals_table(goals: Iterable[Goal]) -> str:
    return table(["goal", "realip", "reference", "ratio", "goal", "mark"], [g.row() for g in goals])


# --------------------------------------------------------------------------- output


def fmt_ns(value: float) -> str:
    """Nanoseconds: "850 ns", "12.3 us" (ASCII, so any terminal prints it)."""
    if abs(value) >= 10_000:
        return f"{value / 1000:,.1f} us"
    return f"{value:,.0f} ns"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/cpu-s"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def machine() -> str:
    from importlib.metadata import version

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ""
    with contextlib.suppress(OSError):
        load = ", load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}, {cpu}, "
        f"{os.cpu_count()} CPUs{load}; uvicorn {version('uvicorn')}, Werkzeug {version('werkzeug')}, "
        f"gunicorn {version('gunicorn')}, httptools {version('httptools')}"
    )
