#!/usr/bin/env python3
"""realip's benchmarks, in one command: ``make bench`` (or ``.venv/bin/python benchmarks/run.py``).

What it measures, in one run (``docs/performance.md`` explains the method and the results):

1. **Per-request overhead in-process**, ASGI and WSGI: time(middleware + trivial app)
   minus time(trivial app alone), for a bare pass-through middleware (the floor),
   realip unwrapping a mapped peer, realip with a trusted two-entry
   ``X-Forwarded-For``, realip with ``Forwarded``, realip with a TOA answer, and
   uvicorn's ``ProxyHeadersMiddleware`` / Werkzeug's ``ProxyFix`` on the same
   requests. Three columns: *keep-alive* (the same connection's next request: caches
   hit), *new connection* (a new peer port each request, same headers) and *cold*
   (nothing seen before: new port and a new client address each request).
2. **The cost of one TOA lookup** (``realip.toa.lookup`` on a real accepted socket):
   as this host answers (``ENOPROTOOPT`` without the module), and ``FOUND`` under the
   test emulator.
3. **How the cost grows with the number of ``X-Forwarded-For`` entries** (1, 2, 8, 32).
4. **Memory under hostile input**: 100k distinct header values and peers; the cache
   sizes and the RSS.
5. **End to end**: requests per second of a real uvicorn (httptools), single worker,
   under ``wrk`` on loopback, with and without realip.

The in-process part runs in a child process with the TOA emulator preloaded
(``LD_PRELOAD`` works only at process start), so the TOA rows time a real ``FOUND``
answer on a real accepted socket; without gcc it runs without the emulator and says so.
All variants of a table run in one process, interleaved in a new random order each
repeat, each on freshly built requests (a server builds a new scope / environ per
request), with the garbage collector off while timing; the number reported is the
best of the repeats.

``--quick`` runs everything but wrk with tiny counts (a smoke test, numbers
meaningless); ``--json PATH`` also writes the raw results.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LB = "127.0.0.5"  # the NAT64 load balancer of the TOA rows (connects from here)
TOA_CLIENT = "nat64:[2001:db8::5]:40000"  # what the emulated module knows about its connections
COLUMNS = ("keep-alive", "new conn", "cold")
XFF_SIZES = (1, 2, 8, 32)

# --------------------------------------------------------------------------- parameters


def params_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "n": 60,
            "repeats": 2,
            "toa_batch": 20,
            "scaling_n": 40,
            "scaling_repeats": 2,
            "lookups": 200,
            "memory_values": 3000,
            "quick": True,
        }
    return {
        "n": 3000,
        "repeats": 15,
        "toa_batch": 400,
        "scaling_n": 1000,
        "scaling_repeats": 9,
        "lookups": 20000,
        "memory_values": 100_000,
        "quick": False,
    }


# --------------------------------------------------------------------------- the apps


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The trivial ASGI app: reads the client, answers nothing."""
    scope["client"]


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The trivial WSGI app: reads the client, returns a constant body."""
    environ["REMOTE_ADDR"]
    return BODY


BODY = [b"ok"]


class PassThrough:
    """The floor: the thinnest ASGI middleware there is."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class PassThroughWSGI:
    """The floor: the thinnest WSGI middleware there is."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


class RewriteOnly:
    """A reference, not a product: the least any middleware that rewrites the client can do.

    Look the peer up in a dict, write ``scope["client"]``, publish the answer in
    ``scope["extensions"]``. Nothing else (no checks, no headers, no TOA, naive unwrapping):
    the lower bound realip's unwrap-only row is compared with.
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
            client = self.peers[peer] = (peer[0].removeprefix("::ffff:"), peer[1])
        scope["client"] = client
        scope["extensions"] = {"realip": client}
        await self.app(scope, receive, send)


class RewriteOnlyWSGI:
    """The WSGI reference: the least a middleware that rewrites ``REMOTE_ADDR`` can do."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.peers: dict[Any, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = (environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"))
        client = self.peers.get(peer)
        if client is None:
            client = self.peers[peer] = peer[0].removeprefix("::ffff:")
        environ["REMOTE_ADDR"] = client
        environ["realip"] = client
        return self.app(environ, start_response)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    return None


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


CONNECTION = "bench.connection"  # scope key carrying (socket, peer) for the "new connection" TOA rows


class UvicornConnection:
    """A new uvicorn connection per request, as ``realip.uvicorn``'s protocol makes it.

    ``connection_made`` asks the TOA module (``ConnectionResolver.resolve``) and wraps
    the app in a :class:`realip.uvicorn.ConnectionApp`; then the request runs. Used for
    the "new conn" / "cold" columns of the TOA row: the lookup is part of the cost.
    """

    def __init__(self, app: Any, resolver: Any) -> None:
        from realip.uvicorn import ConnectionApp

        self.app = app
        self.resolver = resolver
        self.wrap = ConnectionApp

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        sock, peer = scope[CONNECTION]
        return self.wrap(self.app, self.resolver.resolve(sock, peer))(scope, receive, send)


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


def _fresh(text: str) -> str:
    """An equal but distinct str, as a server parsing a new request makes (its hash is not cached)."""
    return (text + " ")[:-1]


class Request:
    """What one request is made of; turned into a fresh scope or environ per use."""

    __slots__ = ("client", "headers", "sock")

    def __init__(self, client: tuple[str, int], headers: list[tuple[str, str]], sock: Any = None) -> None:
        self.client = client
        self.headers = headers
        self.sock = sock

    def scope(self, client: tuple[str, int] | None = None) -> dict[str, Any]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": self.client if client is None else client,
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
        environ = dict(WSGI_BASE)
        for k, v in HEADERS:
            environ["HTTP_" + k.decode().upper().replace("-", "_")] = _fresh(v.decode("latin-1"))
        for k, v in self.headers:
            environ["HTTP_" + k.upper().replace("-", "_")] = _fresh(v)
        environ["gunicorn.socket"] = self.sock if self.sock is not None else _NOT_ASKED
        environ["REMOTE_ADDR"] = self.client[0]
        environ["REMOTE_PORT"] = str(self.client[1])
        return environ


_NOT_ASKED = object()  # gunicorn always sets gunicorn.socket; realip only touches it for a TOA peer


class Serial:
    """Never-repeating ports and addresses for the new-connection and cold columns.

    Ports cycle through 64512 values and addresses through 198.18.0.0/15 (131072):
    any key comes back only after far more than realip's 4096-entry caches hold.
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


def xff_value(entries: int, client: str = "203.0.113.5") -> str:
    """``client`` then ``entries - 1`` trusted proxies (10.0.0.x), as appending proxies write it."""
    return ", ".join([client, *(f"10.0.{i >> 8}.{i & 255}" for i in range(1, entries))])


def requests_for(scenario: str, column: str, n: int, serial: Serial, socks: list[Any] | None = None) -> list[Request]:
    """``n`` requests of ``scenario`` for ``column``; every variant gets the same ones."""
    out = []
    keep_port = 51234
    for j in range(n):
        i = serial.next()
        port = keep_port if column == "keep-alive" else Serial.port(i)
        client = "203.0.113.5" if column != "cold" else Serial.address(i)
        if scenario == "mapped":
            peer = "::ffff:" + client
            out.append(Request((peer, port), []))
        elif scenario.startswith("xff"):
            out.append(Request(("10.0.0.2", port), [("x-forwarded-for", xff_value(int(scenario[3:]), client))]))
        elif scenario == "forwarded":
            value = f"for={client};proto=https, for=10.0.0.1"
            out.append(Request(("10.0.0.2", port), [("forwarded", value)]))
        elif scenario == "toa":
            assert socks is not None
            sock, peer = socks[0] if column == "keep-alive" else socks[j]
            out.append(Request(peer, [], sock))
        else:
            raise ValueError(scenario)
    if column == "keep-alive":
        # One connection: uvicorn hands every scope of a connection the same client tuple.
        for r in out:
            r.client = out[0].client
    return out


# --------------------------------------------------------------------------- sockets


class Listener:
    """A loopback listener that hands out real accepted connections from the load balancer."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.address = self.sock.getsockname()
        self._clients: list[socket.socket] = []

    def connections(self, count: int) -> list[tuple[socket.socket, tuple[str, int]]]:
        out = []
        for _ in range(count):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # RST on close: no TIME_WAIT pile-up over tens of thousands of connections.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.bind((LB, 0))
            client.connect(self.address)
            accepted, peer = self.sock.accept()
            self._clients.append(client)
            out.append((accepted, (peer[0], peer[1])))
        return out

    def close_all(self, connections: Iterable[tuple[socket.socket, Any]]) -> None:
        for sock, _ in connections:
            sock.close()
        for client in self._clients:
            client.close()
        self._clients.clear()


# --------------------------------------------------------------------------- timing


def time_asgi(app: Any, scopes: list[dict[str, Any]]) -> float:
    """ns per request for ``await app(scope, ...)`` over ``scopes`` (nothing suspends: no event loop)."""

    async def drive() -> None:
        for scope in scopes:
            await app(scope, receive, send)

    coroutine = drive()
    start = time.perf_counter_ns()
    try:
        coroutine.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover - an app that suspended: not what is measured here
        raise RuntimeError("an ASGI app suspended")
    return (time.perf_counter_ns() - start) / len(scopes)


def time_wsgi(app: Any, environs: list[dict[str, Any]]) -> float:
    start = time.perf_counter_ns()
    for environ in environs:
        app(environ, start_response)
    return (time.perf_counter_ns() - start) / len(environs)


def timed(fn: Callable[[], float]) -> float:
    gc.collect()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


# --------------------------------------------------------------------------- in-process overhead


def overhead_variants(toa_peers: str) -> dict[str, list[tuple[str, str, Any]]]:
    """(name, scenario, app) per interface; the first is the app alone (the baseline)."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
    from werkzeug.middleware.proxy_fix import ProxyFix

    from realip import RealIPMiddleware, RealIPWSGIMiddleware
    from realip.connection import ConnectionResolver

    trusted = {"environ": {}, "trusted_proxies": "10.0.0.0/8"}
    resolver = ConnectionResolver(toa_peers=toa_peers)
    toa_asgi = RealIPMiddleware(asgi_app, environ={}, toa_peers=toa_peers)
    asgi = [
        ("app alone", "mapped", asgi_app),
        ("app alone", "toa", asgi_app),
        ("pass-through (floor)", "mapped", PassThrough(asgi_app)),
        ("reference: rewrite only (lower bound)", "mapped", RewriteOnly(asgi_app)),
        ("realip: unwrap mapped peer", "mapped", RealIPMiddleware(asgi_app, environ={})),
        ("realip: X-Forwarded-For, 2 entries", "xff2", RealIPMiddleware(asgi_app, **trusted)),
        ("realip: Forwarded", "forwarded", RealIPMiddleware(asgi_app, strategy="forwarded", **trusted)),
        ("realip: TOA answer (uvicorn integration)", "toa", UvicornConnection(toa_asgi, resolver)),
        ("uvicorn ProxyHeadersMiddleware, XFF 2", "xff2", ProxyHeadersMiddleware(asgi_app, trusted_hosts="10.0.0.0/8")),
    ]
    wsgi = [
        ("app alone", "mapped", wsgi_app),
        ("app alone", "toa", wsgi_app),
        ("pass-through (floor)", "mapped", PassThroughWSGI(wsgi_app)),
        ("reference: rewrite only (lower bound)", "mapped", RewriteOnlyWSGI(wsgi_app)),
        ("realip: unwrap mapped peer", "mapped", RealIPWSGIMiddleware(wsgi_app, environ={})),
        ("realip: X-Forwarded-For, 2 entries", "xff2", RealIPWSGIMiddleware(wsgi_app, **trusted)),
        ("realip: Forwarded", "forwarded", RealIPWSGIMiddleware(wsgi_app, strategy="forwarded", **trusted)),
        (
            "realip: TOA answer (gunicorn.socket)",
            "toa",
            RealIPWSGIMiddleware(wsgi_app, environ={}, toa_peers=toa_peers),
        ),
        ("Werkzeug ProxyFix(x_for=2), XFF 2", "xff2", ProxyFix(wsgi_app, x_for=2)),
    ]
    return {"asgi": asgi, "wsgi": wsgi, "_toa_asgi_keepalive": [("", "", ConnectionAppFor(toa_asgi, resolver))]}


class ConnectionAppFor:
    """The keep-alive TOA row: one connection, its answer looked up once (outside the timing)."""

    def __init__(self, app: Any, resolver: Any) -> None:
        self.app = app
        self.resolver = resolver
        self.cache: dict[int, Any] = {}

    def for_connection(self, sock: Any, peer: tuple[str, int]) -> Any:
        from realip.uvicorn import ConnectionApp

        key = id(sock)
        if key not in self.cache:
            self.cache = {key: ConnectionApp(self.app, self.resolver.resolve(sock, peer))}
        return self.cache[key]


def measure_overhead(p: dict[str, Any], listener: Listener) -> dict[str, Any]:
    variants = overhead_variants(f"{LB}/32")
    keepalive_toa = variants.pop("_toa_asgi_keepalive")[0][2]
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        iface: {name + ("" if name != "app alone" else f" [{sc}]"): {c: [] for c in COLUMNS} for name, sc, _ in vs}
        for iface, vs in variants.items()
    }
    serial = Serial()
    keep_conn = listener.connections(1)
    scenarios = ("mapped", "xff2", "forwarded", "toa")
    for _ in range(p["repeats"]):
        for column in COLUMNS:
            conns = keep_conn if column == "keep-alive" else listener.connections(p["toa_batch"])
            reqs = {
                sc: requests_for(sc, column, p["toa_batch"] if sc == "toa" else p["n"], serial, conns)
                for sc in scenarios
            }
            jobs = []
            for iface, vs in variants.items():
                for name, sc, app in vs:
                    jobs.append((iface, name + ("" if name != "app alone" else f" [{sc}]"), sc, app))
            random.shuffle(jobs)
            for iface, name, sc, app in jobs:
                if iface == "asgi":
                    if sc == "toa" and column == "keep-alive" and name.startswith("realip"):
                        sock, peer = keep_conn[0]
                        app = keepalive_toa.for_connection(sock, peer)
                    scopes = [r.scope() for r in reqs[sc]]
                    if sc == "toa" and column == "keep-alive":
                        for s in scopes:
                            del s[CONNECTION]
                    results[iface][name][column].append(timed(lambda a=app, s=scopes: time_asgi(a, s)))
                else:
                    environs = [r.environ() for r in reqs[sc]]
                    results[iface][name][column].append(timed(lambda a=app, e=environs: time_wsgi(a, e)))
            if column != "keep-alive":
                listener.close_all(conns)
    listener.close_all(keep_conn)
    return results


# --------------------------------------------------------------------------- X-Forwarded-For growth


def measure_scaling(p: dict[str, Any]) -> dict[str, Any]:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
    from werkzeug.middleware.proxy_fix import ProxyFix

    from realip import RealIPMiddleware, RealIPWSGIMiddleware

    trusted = {"environ": {}, "trusted_proxies": "10.0.0.0/8"}
    apps: list[tuple[str, str, int, Any]] = [("asgi", "app alone", 1, asgi_app), ("wsgi", "app alone", 1, wsgi_app)]
    for k in XFF_SIZES:
        apps += [
            ("asgi", "realip", k, RealIPMiddleware(asgi_app, **trusted)),
            ("asgi", "uvicorn ProxyHeadersMiddleware", k, ProxyHeadersMiddleware(asgi_app, trusted_hosts="10.0.0.0/8")),
            ("wsgi", "realip", k, RealIPWSGIMiddleware(wsgi_app, **trusted)),
            ("wsgi", f"Werkzeug ProxyFix(x_for={k})", k, ProxyFix(wsgi_app, x_for=k)),
        ]
    results: dict[str, dict[str, list[float]]] = {}
    serial = Serial()
    for _ in range(p["scaling_repeats"]):
        for column in COLUMNS:
            reqs = {k: requests_for(f"xff{k}", column, p["scaling_n"], serial) for k in XFF_SIZES}
            jobs = list(apps)
            random.shuffle(jobs)
            for iface, name, k, app in jobs:
                key = f"{iface}|{name}|{k}|{column}"
                if iface == "asgi":
                    scopes = [r.scope() for r in reqs[k]]
                    value = timed(lambda a=app, s=scopes: time_asgi(a, s))
                else:
                    environs = [r.environ() for r in reqs[k]]
                    value = timed(lambda a=app, e=environs: time_wsgi(a, e))
                results.setdefault(key, []).append(value)
    return results


# --------------------------------------------------------------------------- TOA lookup


def measure_lookup(p: dict[str, Any]) -> dict[str, Any]:
    """ns per ``realip.toa.lookup`` on one real accepted connection from the load balancer."""
    from realip import toa

    listener = Listener()
    conns = listener.connections(1)
    sock = conns[0][0]
    answer = toa.lookup(sock)
    best = float("inf")
    n = p["lookups"]
    lookup = toa.lookup
    for _ in range(7 if not p["quick"] else 2):
        gc.disable()
        start = time.perf_counter_ns()
        for _ in range(n):
            lookup(sock)
        best = min(best, (time.perf_counter_ns() - start) / n)
        gc.enable()
    listener.close_all(conns)
    listener.sock.close()
    detail = answer.status.value
    if answer.address is not None:
        detail += f" [{answer.address}]:{answer.port}"
    elif answer.errno:
        import errno as errno_module

        detail += f" ({errno_module.errorcode.get(answer.errno, answer.errno)})"
    return {"ns": best, "status": answer.status.value, "detail": detail, "available": toa.available()}


# --------------------------------------------------------------------------- memory


def rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def caches(asgi: Any, wsgi: Any) -> dict[str, Any]:
    """Every cache realip keeps, by name: the middlewares', their resolvers', the TOA lookup's, the modules'."""
    import weakref

    from realip import core, strategies

    owners = {
        "ASGI middleware": asgi,
        "ASGI Resolver": asgi._resolver,
        "WSGI EnvironResolver": wsgi._apply,
        "WSGI Resolver": wsgi._apply.resolver,
        "WSGI ConnectionLookup": wsgi._apply.connection,
        "WSGI ConnectionResolver": wsgi._apply.connection.resolver,
    }
    found: dict[str, Any] = {}
    for owner, obj in owners.items():
        for name, value in vars(obj).items():
            if isinstance(value, (dict, weakref.WeakKeyDictionary)) and name not in ("__dict__",):
                found[f"{owner}.{name}"] = value
    found["realip.core._HOSTS"] = core._HOSTS
    found["realip.strategies._IPV4_ENTRIES"] = strategies._IPV4_ENTRIES
    return found


def _longest_key(cache: Any) -> int:
    """Characters in the longest text inside a cache's keys (the header texts they hold)."""
    longest = 0
    for key in list(cache.keys()):
        parts = key if isinstance(key, tuple) else (key,)
        for part in parts:
            if isinstance(part, (str, bytes)):
                longest = max(longest, len(part))
    return longest


def measure_memory(p: dict[str, Any]) -> dict[str, Any]:
    """Feed distinct peers and header values, as a hostile client varying them would; report caches and RSS."""
    from realip import RealIPMiddleware, RealIPWSGIMiddleware
    from realip.core import CACHE_SIZE

    options = {"environ": {}, "trusted_proxies": "10.0.0.0/8"}
    asgi = RealIPMiddleware(asgi_app, **options)
    wsgi = RealIPWSGIMiddleware(wsgi_app, **options)
    n = p["memory_values"]
    serial = Serial()
    long_tail = ", ".join(f"10.1.{i >> 8}.{i & 255}" for i in range(1, 60))  # ~700 characters of trusted proxies

    def request(kind: str, i: int) -> Request:
        port = Serial.port(i)
        if kind == "peers":
            return Request((f"::ffff:{Serial.address(i)}", port), [])
        if kind == "X-Forwarded-For values":
            return Request(("10.0.0.2", port), [("x-forwarded-for", f"{Serial.address(i)}, 10.0.0.1")])
        if kind == "garbage values":
            return Request(("10.0.0.2", port), [("x-forwarded-for", f"<junk {i}>, 10.0.0.1")])
        # 8 KiB: a different client left of ~60 trusted hops, padded past the length cap
        pad = "x" * (8200 - len(long_tail))
        return Request(("10.0.0.2", port), [("x-forwarded-for", f"{pad}{i}, {Serial.address(i)}, {long_tail}")])

    def feed(kind: str) -> None:
        for _ in range(n):
            r = request(kind, serial.next())
            with contextlib.suppress(StopIteration):
                asgi(r.scope(), receive, send).send(None)
            wsgi(r.environ(), start_response)

    def row(after: str) -> dict[str, Any]:
        gc.collect()
        found = caches(asgi, wsgi)
        sizes = {name: len(cache) for name, cache in found.items()}
        return {
            "after": after,
            "rss_kib": rss_kib(),
            "sizes": sizes,
            "longest_key": max(_longest_key(c) for c in found.values()),
        }

    import logging

    logging.getLogger("realip").disabled = True  # "not believed" warnings for the garbage (rate-limited anyway)
    rows = [row("start")]
    steps = (
        "peers",
        "X-Forwarded-For values",
        "garbage values",
        "8 KiB values",
        "8 KiB values",
        "X-Forwarded-For values",
    )
    for kind in steps:
        feed(kind)
        rows.append(row(f"+{n:,} distinct {kind}"))
    return {"rows": rows, "limit": CACHE_SIZE, "values": n}


# --------------------------------------------------------------------------- child processes


def child_main(kind: str, p: dict[str, Any]) -> None:
    import logging

    logging.getLogger("realip").addHandler(logging.NullHandler())
    logging.getLogger("realip").propagate = False
    if kind == "inproc":
        if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # one CPU: no migrations mid-batch
        listener = Listener()
        out = {
            "lookup": measure_lookup(p),
            "overhead": measure_overhead(p, listener),
            "scaling": measure_scaling(p),
            "preloaded": bool(os.environ.get("LD_PRELOAD")),
        }
    elif kind == "memory":
        out = measure_memory(p)
    else:
        raise SystemExit(f"unknown child {kind}")
    json.dump(out, sys.stdout)


def run_child(kind: str, p: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--params", json.dumps(p)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmark child {kind!r} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def emulator_env(tmp: Path) -> tuple[dict[str, str], str]:
    """LD_PRELOAD of the TOA emulator, or nothing (and why) when it cannot be built."""
    if shutil.which("gcc") is None:
        return {}, "gcc not found: TOA rows run without the emulator (this host's own answer)"
    from tests import toa_emulator

    try:
        library = toa_emulator.build(tmp / "toa")
    except RuntimeError as exc:
        return {}, f"TOA emulator did not build ({exc}); TOA rows run without it"
    return toa_emulator.env({LB: TOA_CLIENT}, None, library=library), ""


# --------------------------------------------------------------------------- end to end


E2E_VARIANTS = {
    # name: (benchmarks/e2e_app.py variant, sends X-Forwarded-For)
    "uvicorn alone": ("plain", False),
    "uvicorn + a pass-through middleware (floor)": ("passthrough", False),
    "uvicorn + rewrite-only reference (lower bound)": ("rewrite", False),
    "uvicorn + RealIPMiddleware()": ("default", False),
    "uvicorn + realip protocol + RealIPMiddleware()": ("integration", False),
    "uvicorn alone, X-Forwarded-For sent": ("plain-proxied", True),
    "uvicorn + RealIPMiddleware(trusted_proxies), X-Forwarded-For sent": ("trusted", True),
}
E2E_BASELINE = {False: "uvicorn alone", True: "uvicorn alone, X-Forwarded-For sent"}
XFF_SENT = "X-Forwarded-For: 203.0.113.5, 127.0.0.9"  # 127.0.0.9: a trusted proxy (127.0.0.0/8)


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        return int(s.getsockname()[1])


def run_e2e(duration: int, rounds: int, tmp: Path) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk not found (apt-get install wrk)"}
    cpus = os.cpu_count() or 1
    taskset = shutil.which("taskset") if cpus >= 2 else None
    server_pin = [taskset, "-c", "0"] if taskset else []
    wrk_pin = [taskset, "-c", f"1-{cpus - 1}"] if taskset else []
    servers: dict[str, tuple[subprocess.Popen[bytes], int, Any]] = {}
    try:
        for name, (variant, _) in E2E_VARIANTS.items():
            port = _free_port()
            log = open(tmp / f"e2e-{variant}.log", "wb")  # noqa: SIM115 - closed with the server
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            env.pop("LD_PRELOAD", None)
            argv = [*server_pin, sys.executable, str(ROOT / "benchmarks" / "e2e_app.py"), str(port), variant]
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            servers[name] = (process, port, log)
        for name, (process, port, _) in servers.items():
            _wait_ready(process, port, tmp / f"e2e-{E2E_VARIANTS[name][0]}.log", name)
        rps: dict[str, list[float]] = {name: [] for name in servers}
        errors: dict[str, int] = {name: 0 for name in servers}
        order = list(servers)
        for r in range(-1, rounds):  # round -1: warm-up, not counted
            random.shuffle(order)
            for name in order:
                port = servers[name][1]
                header = ["-H", XFF_SENT] if E2E_VARIANTS[name][1] else []
                argv = [
                    *wrk_pin,
                    wrk,
                    "-t2",
                    "-c32",
                    f"-d{1 if r < 0 else duration}s",
                    *header,
                    f"http://127.0.0.1:{port}/",
                ]
                done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
                found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
                if done.returncode != 0 or found is None:
                    raise SystemExit(f"wrk failed against {name}:\n{done.stdout}\n{done.stderr}")
                if r >= 0:
                    rps[name].append(float(found.group(1)))
                    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", done.stdout)
                    socket_errors = re.search(r"Socket errors: .*", done.stdout)
                    errors[name] += int(bad.group(1)) if bad else 0
                    if socket_errors:
                        errors[name] += sum(int(x) for x in re.findall(r"\d+", socket_errors.group(0)))
        return {
            "rps": rps,
            "errors": errors,
            "setup": f"wrk -t2 -c32 -d{duration}s against 127.0.0.1, {rounds} rounds, servers in a new random order "
            "each round, median; uvicorn 1 worker, httptools, uvloop, no access log, no proxy headers, dual-stack "
            "[::] listener (peers are ::ffff:127.0.0.1)"
            + (f"; server pinned to CPU 0, wrk to CPU 1-{cpus - 1}" if taskset else ""),
        }
    finally:
        for process, _, log in servers.values():
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            log.close()


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, name: str) -> None:
    import http.client

    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not answer within 30 s")
        time.sleep(0.1)


# --------------------------------------------------------------------------- report


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _overhead(variant: list[float], alone: list[float]) -> float:
    """The median over repeats of (variant - app alone), each pair timed in the same repeat.

    A pair shares whatever the machine was doing during that repeat; the median
    ignores the repeats something else disturbed. (The best of each separately
    would pair one variant's luckiest batch with another's.)
    """
    return statistics.median(v - a for v, a in zip(variant, alone, strict=True))


def _ns(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def overhead_tables(results: dict[str, Any]) -> tuple[str, dict[str, dict[str, dict[str, float]]]]:
    """The two overhead tables, and the overheads (ns) by interface, variant, column."""
    text = []
    overheads: dict[str, dict[str, dict[str, float]]] = {}
    for iface in ("asgi", "wsgi"):
        data = results[iface]
        over: dict[str, dict[str, float]] = {}
        for name, cols in data.items():
            if name.startswith("app alone"):
                continue
            scenario = "toa" if "TOA" in name else "mapped"
            base = data[f"app alone [{scenario}]"]
            over[name] = {c: _overhead(cols[c], base[c]) for c in COLUMNS}
        overheads[iface] = over
        floor = over["pass-through (floor)"]
        header = ["variant (overhead, ns per request)", *COLUMNS, "x floor", "keep-alive total"]
        rows = []
        base = data["app alone [mapped]"]
        rows.append(["app alone (what is subtracted)", *(_ns(_median(base[c])) + " total" for c in COLUMNS), "", ""])
        for name, cols in over.items():
            rows.append(
                [
                    name,
                    *(_ns(cols[c]) for c in COLUMNS),
                    f"{cols['keep-alive'] / floor['keep-alive']:.2f}x",
                    _ns(_median(data[name]["keep-alive"])),
                ]
            )
        text.append(f"### {iface.upper()}\n\n" + _table(header, rows))
    return "\n\n".join(text), overheads


def scaling_table(results: dict[str, list[float]]) -> str:
    def over(iface: str, name: str, k: int, column: str) -> str:
        return _ns(_overhead(results[f"{iface}|{name}|{k}|{column}"], results[f"{iface}|app alone|1|{column}"]))

    header = [
        "entries",
        "ASGI realip keep-alive",
        "ASGI realip cold",
        "uvicorn ProxyHeaders",
        "WSGI realip keep-alive",
        "WSGI realip cold",
        "ProxyFix(x_for=entries)",
    ]
    rows = [
        [
            str(k),
            over("asgi", "realip", k, "keep-alive"),
            over("asgi", "realip", k, "cold"),
            over("asgi", "uvicorn ProxyHeadersMiddleware", k, "cold"),
            over("wsgi", "realip", k, "keep-alive"),
            over("wsgi", "realip", k, "cold"),
            over("wsgi", f"Werkzeug ProxyFix(x_for={k})", k, "cold"),
        ]
        for k in XFF_SIZES
    ]
    return _table(header, rows)


def memory_table(memory: dict[str, Any]) -> str:
    rows = memory["rows"]
    body = []
    for r in rows:
        sizes = r["sizes"]
        largest = max(sizes, key=lambda name: sizes[name])
        body.append(
            [
                r["after"],
                f"{r['rss_kib'] / 1024:.1f}",
                f"{sum(sizes.values()):,}",
                f"{sizes[largest]:,} ({largest})",
                f"{r['longest_key']:,}",
            ]
        )
    names = ", ".join(rows[-1]["sizes"])
    text = _table(["after", "RSS MiB", "entries, all caches", "largest cache", "longest cached text"], body)
    return text + f"\n\nCaches counted ({len(rows[-1]['sizes'])}): {names}."


def report(out: dict[str, Any]) -> tuple[str, list[tuple[str, bool]]]:
    inproc = out["inproc"]
    table, over = overhead_tables(inproc["overhead"])
    a, w = over["asgi"], over["wsgi"]
    lines = [f"realip benchmarks: {out['when']}", out["machine"], ""]
    if out.get("quick"):
        lines += ["QUICK MODE: tiny counts, the numbers mean nothing (a smoke test).", ""]
    lines += [
        "## Per-request overhead in-process",
        "",
        "time(middleware + trivial app) - time(trivial app alone), ns per request: the median, over "
        f"{out['params']['repeats']} interleaved repeats of {out['params']['n']:,} requests each, of the difference "
        "measured within a repeat "
        f"(TOA rows: {out['params']['toa_batch']} connections). keep-alive: the same connection's next request; "
        "new conn: a new peer port each request; cold: a new port and a new client address each request "
        "(nothing cached). x floor: keep-alive overhead over the pass-through's. Totals: medians.",
        f"TOA rows: {inproc['toa_note']}",
        "",
        table,
        "",
        "## One TOA lookup (realip.toa.lookup on a real accepted socket)",
        "",
        _table(
            ["where", "answer", "ns per lookup"],
            [["this host", out["lookup_host"]["detail"], _ns(out["lookup_host"]["ns"])]]
            + (
                [["TOA emulator preloaded", inproc["lookup"]["detail"], _ns(inproc["lookup"]["ns"])]]
                if inproc["preloaded"]
                else []
            ),
        ),
        "",
        "## Overhead by number of X-Forwarded-For entries (ns per request; trusted proxies walked: entries - 1)",
        "",
        scaling_table(inproc["scaling"]),
        "",
        f"## Memory: {out['memory']['values']:,} distinct values per step, both middlewares "
        f"(cache limit {out['memory']['limit']:,} entries each)",
        "",
        memory_table(out["memory"]),
        "",
    ]
    targets: list[tuple[str, bool]] = []
    rows: list[list[str]] = []

    def target(label: str, value: float, limit: float, detail: str) -> None:
        ok = value <= limit
        targets.append((label, ok))
        rows.append([label, detail, "met" if ok else "MISSED"])

    def info(label: str, detail: str) -> None:
        rows.append([label, detail, "(info)"])

    px = a["uvicorn ProxyHeadersMiddleware, XFF 2"]
    fx = w["Werkzeug ProxyFix(x_for=2), XFF 2"]
    ax, wx = a["realip: X-Forwarded-For, 2 entries"], w["realip: X-Forwarded-For, 2 entries"]
    target(
        "ASGI XFF(2) <= 1/2 ProxyHeadersMiddleware",
        ax["keep-alive"],
        px["keep-alive"] / 2,
        f"{_ns(ax['keep-alive'])} vs {_ns(px['keep-alive'])} ns = {ax['keep-alive'] / px['keep-alive']:.0%}",
    )
    target(
        "WSGI XFF(2) <= 1/2 ProxyFix(x_for=2)",
        wx["keep-alive"],
        fx["keep-alive"] / 2,
        f"{_ns(wx['keep-alive'])} vs {_ns(fx['keep-alive'])} ns = {wx['keep-alive'] / fx['keep-alive']:.0%}",
    )
    for column in COLUMNS[1:]:
        info(
            f"ASGI XFF(2) vs ProxyHeadersMiddleware, {column}",
            f"{_ns(ax[column])} vs {_ns(px[column])} ns = {ax[column] / px[column]:.0%}",
        )
        info(
            f"WSGI XFF(2) vs ProxyFix(x_for=2), {column}",
            f"{_ns(wx[column])} vs {_ns(fx[column])} ns = {wx[column] / fx[column]:.0%}",
        )
    for iface, o in (("ASGI", a), ("WSGI", w)):
        u, f = o["realip: unwrap mapped peer"]["keep-alive"], o["pass-through (floor)"]["keep-alive"]
        low = o["reference: rewrite only (lower bound)"]["keep-alive"]
        target(f"{iface} unwrap-only overhead <= pass-through's", u, f, f"{_ns(u)} vs {_ns(f)} ns = {u / f:.0%}")
        info(
            f"{iface} unwrap-only: realip's work beyond a layer vs the layer",
            f"{_ns(u - f)} vs {_ns(f)} ns = {(u - f) / f:.0%}",
        )
        info(f"{iface} unwrap-only vs the rewrite-only lower bound", f"{_ns(u)} vs {_ns(low)} ns (+{_ns(u - low)})")
    mem = out["memory"]
    biggest = max(max(r["sizes"].values()) for r in mem["rows"])
    first_long, second_long = mem["rows"][4]["rss_kib"], mem["rows"][5]["rss_kib"]
    target(
        f"caches bounded ({mem['values']:,} distinct values per step)",
        biggest,
        mem["limit"],
        f"largest cache {biggest:,} entries (limit {mem['limit']:,}); RSS {(second_long - first_long) / 1024:+.1f} MiB "
        "over the second 8 KiB step",
    )
    e2e = out.get("e2e", {})
    if "rps" in e2e:
        medians = {name: statistics.median(v) for name, v in e2e["rps"].items()}
        erows = []
        for name, values in e2e["rps"].items():
            base = medians[E2E_BASELINE[E2E_VARIANTS[name][1]]]
            ratio = medians[name] / base
            erows.append(
                [
                    name,
                    f"{medians[name]:,.0f}",
                    f"{ratio:.1%}",
                    " ".join(f"{v:,.0f}" for v in values),
                    str(e2e["errors"][name]),
                ]
            )
            if name.startswith("uvicorn + realip") or name.startswith("uvicorn + RealIP"):
                target(f"end to end >= 97%: {name}", 0.97, ratio, f"{ratio:.1%} of {base:,.0f} req/s")
        lines += [
            "## End to end (requests per second, trivial app)",
            "",
            e2e["setup"] + ".",
            f"The last two rows send `{XFF_SENT}`; each realip row is compared with the uvicorn-alone row "
            "that got the same requests.",
            "",
            _table(["server", "median req/s", "vs alone", "runs", "errors"], erows),
            "",
        ]
    else:
        lines += ["## End to end", "", f"skipped: {e2e.get('skipped', 'not run')}", ""]
    lines += ["## Targets", "", _table(["target", "measured", "verdict"], rows), ""]
    return "\n".join(lines), targets


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
    return (
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}, {cpu}, "
        f"{os.cpu_count()} CPUs; uvicorn {version('uvicorn')}, Werkzeug {version('werkzeug')}, "
        f"httptools {version('httptools')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts, no wrk: proves it runs, numbers meaningless")
    parser.add_argument("--no-e2e", action="store_true", help="skip the wrk end-to-end runs")
    parser.add_argument("--e2e-duration", type=int, default=2, help="seconds per wrk run (default 2)")
    parser.add_argument("--e2e-rounds", type=int, default=11, help="wrk runs per server (default 11; median)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, json.loads(args.params))
        return 0
    p = params_for(args.quick)
    out: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "params": p,
        "quick": args.quick,
    }
    with tempfile.TemporaryDirectory(prefix="realip-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env, note = emulator_env(tmp)
        print("in-process overhead, TOA lookups, X-Forwarded-For growth ...", file=sys.stderr, flush=True)
        out["inproc"] = run_child("inproc", p, env)
        out["inproc"]["toa_note"] = note or (
            f"the TOA emulator is preloaded (tests/toa_emulator): a connection from {LB} (a trusted load balancer) "
            f"gets a real FOUND answer, [2001:db8::5]:40000"
        )
        out["lookup_host"] = measure_lookup(p)
        print("memory under distinct values ...", file=sys.stderr, flush=True)
        out["memory"] = run_child("memory", p)
        if args.quick or args.no_e2e:
            out["e2e"] = {"skipped": "--quick" if args.quick else "--no-e2e"}
        else:
            print("end to end with wrk ...", file=sys.stderr, flush=True)
            out["e2e"] = run_e2e(args.e2e_duration, args.e2e_rounds, tmp)
    text, targets = report(out)
    print(text)
    out["targets"] = dict(targets)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
