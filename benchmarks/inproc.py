"""In-process overhead per request, ASGI and WSGI, and the cost of one TOA lookup.

Overhead = time(middleware + trivial app) - time(pass-through + trivial app) on the
same requests, timed in the same round: the median over interleaved rounds of that
difference. Time is the measuring thread's CPU time (``time.thread_time_ns``), so what
other processes take from the CPU is not counted. Four columns:

* **keep-alive**: the same connection's next request (uvicorn hands every scope of a
  connection the same ``client`` tuple; gunicorn the same socket);
* **pool**: the same, but on 32 kept-alive connections from the same host, each request
  on the next one in turn, as a proxy spreads its requests over its upstream connections;
* **new conn**: each request on a new connection from the same trusted proxy (a new
  ``scope["client"]`` tuple and host text; WSGI: a new ``REMOTE_PORT`` and
  ``gunicorn.socket``), the same headers: no per-peer cache can answer;
* **cold**: a new connection and a new client address each request: nothing seen before.

Every request belongs to a real accepted TCP connection on loopback (the proxy connects
from 127.0.0.2; mapped peers from 127.0.0.3 to a dual-stack listener), and the peer is
what ``accept()`` reported: WSGI gets the socket as gunicorn hands it over.

Run in two children: the TOA rows with the test suite's TOA emulator preloaded
(``LD_PRELOAD``, so a connection from the load balancer 127.0.0.5 gets a real ``FOUND``
answer), everything else on the host as it is (where realip finds no TOA module once
and stops asking for a minute, as on most hosts).
"""

from __future__ import annotations

import gc
import os
import random
import weakref
from dataclasses import dataclass
from typing import Any

from benchmarks.common import (
    CLIENT,
    COLUMNS,
    CONNECTION,
    HOP,
    POOL_SIZE,
    PROXY,
    TRUSTED,
    Connection,
    Goal,
    Listener,
    PassThrough,
    PassThroughWSGI,
    Request,
    RewriteOnly,
    RewriteOnlyWSGI,
    Serial,
    answer,
    asgi_app,
    clock,
    connections_possible,
    fmt_ns,
    paired_overhead,
    table,
    time_requests,
    wsgi_app,
)

LB = "127.0.0.5"  # the NAT64 load balancer of the TOA rows (connects from here)
TOA_CLIENT = "nat64:[2001:db8::5]:40000"  # what the emulated module knows about its connections
MAPPED_FROM = "127.0.0.3"  # the client of the unwrap rows, seen as ::ffff:127.0.0.3
SCENARIOS = ("mapped", "xff2", "forwarded", "toa")
WITHOUT_TOA = ["mapped", "xff2", "forwarded"]  # the child without the emulator
BASELINE = "pass-through (floor)"  # on the "mapped" requests; "pass-through [scenario]" on the others

REALIP_UNWRAP = "realip: unwrap mapped peer"
#: The same with ``strip_untrusted_headers=False``: what checking a direct client's
#: headers for forwarding headers (the hardening rule) costs, by difference.
REALIP_UNWRAP_KEPT = "realip: unwrap, headers not checked"
REALIP_XFF = "realip: X-Forwarded-For, 2 entries"
REWRITE = "reference: rewrite only (yardstick)"
PROXY_HEADERS = "uvicorn ProxyHeadersMiddleware"
PROXY_FIX = "Werkzeug ProxyFix(x_for=2)"


def baseline_of(scenario: str) -> str:
    return BASELINE if scenario == "mapped" else f"pass-through [{scenario}]"


def kind_of(scenario: str) -> str:
    """Where a scenario's connections come from: the mapped client, the proxy, or the load balancer."""
    return scenario if scenario in ("mapped", "toa") else "proxy"


# --------------------------------------------------------------------------- the TOA rows


class UvicornConnections:
    """What ``realip.uvicorn``'s protocol does around the app, as far as time goes.

    Per new connection: ask (``ConnectionResolver.resolve``, the TOA lookup) and wrap the
    app in ``ConnectionApp``; per request: call it. The connection is the socket in
    ``scope[CONNECTION]`` (a key of this benchmark, ignored by everything else).
    """

    def __init__(self, app: Any, resolver: Any) -> None:
        from realip.uvicorn import ConnectionApp

        self.app = app
        self.resolver = resolver
        self.wrap = ConnectionApp
        self.current: tuple[Any, Any] | None = None
        #: Each connection's wrapped app, as its protocol object holds it (a pool's connections take turns).
        self.calls: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        sock, peer = scope[CONNECTION]
        current = self.current
        if current is None or current[0] is not sock:
            call = self.calls.get(sock)
            if call is None:
                call = self.calls[sock] = self.wrap(self.app, self.resolver.resolve(sock, peer)).__call__
            current = self.current = (sock, call)
        return current[1](scope, receive, send)


def toa_asgi_app() -> tuple[Any, str]:
    """The ASGI TOA row's app, or ``None`` and why (it uses realip's integration internals)."""
    try:
        from realip import RealIPMiddleware
        from realip.connection import ConnectionResolver

        resolver = ConnectionResolver(toa_peers=f"{LB}/32")
        return UvicornConnections(RealIPMiddleware(asgi_app, environ={}, toa_peers=f"{LB}/32"), resolver), ""
    except Exception as exc:  # the lead is rewriting these internals: the row waits for them
        return None, f"{type(exc).__name__}: {exc}"


def measure_lookup(p: dict[str, Any]) -> dict[str, Any]:
    """ns per ``realip.toa.lookup`` on one real accepted connection from the load balancer."""
    from realip import toa

    listener = Listener()
    connection = listener.connect_from(LB)
    sock = connection.sock
    found = toa.lookup(sock)
    best = float("inf")
    n = p["lookups"]
    lookup = toa.lookup
    for _ in range(2 if p["quick"] else 7):
        gc.disable()
        start = clock()
        for _ in range(n):
            lookup(sock)
        best = min(best, (clock() - start) / n)
        gc.enable()
    connection.close()
    listener.close()
    detail = found.status.value
    if found.address is not None:
        detail += f" [{found.address}]:{found.port}"
    elif found.errno:
        import errno as errno_module

        detail += f" ({errno_module.errorcode.get(found.errno, found.errno)})"
    return {"ns": best, "status": found.status.value, "detail": detail, "available": toa.available()}


# --------------------------------------------------------------------------- requests and variants


class Connections:
    """The connections a column's requests arrive on, by scenario."""

    def __init__(self) -> None:
        self.v4 = Listener()
        self.dual_stack = Listener(dual_stack=True)
        self.keep = {
            "mapped": self.dual_stack.connect_from(MAPPED_FROM),
            "proxy": self.v4.connect_from(PROXY),
            "toa": self.v4.connect_from(LB),
        }
        #: A proxy's (a load balancer's, a NATed client's) kept-alive connections, by kind.
        self.pools: dict[str, list[Connection]] = {}

    def for_column(self, column: str, scenarios: list[str], n: int, serial: Serial) -> dict[str, list[Connection]]:
        """n connections per kind (``mapped``, ``proxy``, ``toa``) that ``scenarios`` use."""
        kinds = {kind_of(sc) for sc in scenarios}
        if column == "keep-alive":
            return {kind: [self.keep[kind]] * n for kind in kinds}
        if column == "pool":
            return {kind: [self.pool(kind)[i % POOL_SIZE] for i in range(n)] for kind in kinds}
        out: dict[str, list[Connection]] = {}
        for kind in kinds:
            if kind == "mapped":
                out[kind] = [
                    self.dual_stack.connect_from(Serial.loopback(serial.next()) if column == "cold" else MAPPED_FROM)
                    for _ in range(n)
                ]
            else:
                out[kind] = [self.v4.connect_from(LB if kind == "toa" else PROXY) for _ in range(n)]
        return out

    def pool(self, kind: str) -> list[Connection]:
        """POOL_SIZE kept-alive connections of ``kind``, opened on first use and kept."""
        if kind not in self.pools:
            listener = self.dual_stack if kind == "mapped" else self.v4
            source = {"mapped": MAPPED_FROM, "proxy": PROXY, "toa": LB}[kind]
            self.pools[kind] = [listener.connect_from(source) for _ in range(POOL_SIZE)]
        return self.pools[kind]

    def close(self) -> None:
        for connection in [*self.keep.values(), *(c for pool in self.pools.values() for c in pool)]:
            connection.close()
        self.v4.close()
        self.dual_stack.close()


def requests_for(scenario: str, column: str, connections: list[Connection], serial: Serial) -> list[Request]:
    """One request of ``scenario`` per connection; every variant of the round gets these."""
    out = []
    for connection in connections:
        client = Serial.address(serial.next()) if column == "cold" else CLIENT
        if scenario == "xff2":
            headers = [("x-forwarded-for", f"{client}, {HOP}")]
        elif scenario == "forwarded":
            headers = [("forwarded", f"for={client};proto=https, for={HOP}")]
        else:  # mapped, toa: the peer is all there is
            headers = []
        out.append(Request(connection.peer, headers, connection.sock))
    return out


@dataclass
class Variant:
    interface: str
    name: str
    scenario: str
    app: Any
    expect: str | None = None  # the client it must answer on a keep-alive request (checked before timing)


def variants(scenarios: list[str]) -> tuple[list[Variant], str]:
    """The variants of ``scenarios``, and why the ASGI TOA row is missing (or "")."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
    from werkzeug.middleware.proxy_fix import ProxyFix

    from realip import RealIPMiddleware, RealIPWSGIMiddleware

    trusted: dict[str, Any] = {"environ": {}, "trusted_proxies": TRUSTED}
    kept: dict[str, Any] = {"environ": {}, "strip_untrusted_headers": False}
    unwrapped = MAPPED_FROM
    out = []
    for interface, passthrough in (("asgi", PassThrough), ("wsgi", PassThroughWSGI)):
        app = asgi_app if interface == "asgi" else wsgi_app
        out.append(Variant(interface, "app alone", "mapped", app))
        for scenario in SCENARIOS:
            out.append(Variant(interface, baseline_of(scenario), scenario, passthrough(app)))
    out += [
        Variant("asgi", REWRITE, "mapped", RewriteOnly(asgi_app), unwrapped),
        Variant("asgi", REALIP_UNWRAP, "mapped", RealIPMiddleware(asgi_app, environ={}), unwrapped),
        Variant("asgi", REALIP_UNWRAP_KEPT, "mapped", RealIPMiddleware(asgi_app, **kept), unwrapped),
        Variant("asgi", REALIP_XFF, "xff2", RealIPMiddleware(asgi_app, **trusted), CLIENT),
        Variant(
            "asgi",
            "realip: Forwarded, 2 entries",
            "forwarded",
            RealIPMiddleware(asgi_app, strategy="forwarded", **trusted),
            CLIENT,
        ),
        Variant("asgi", PROXY_HEADERS, "xff2", ProxyHeadersMiddleware(asgi_app, trusted_hosts=TRUSTED), CLIENT),
        Variant("wsgi", REWRITE, "mapped", RewriteOnlyWSGI(wsgi_app), unwrapped),
        Variant("wsgi", REALIP_UNWRAP, "mapped", RealIPWSGIMiddleware(wsgi_app, environ={}), unwrapped),
        Variant("wsgi", REALIP_UNWRAP_KEPT, "mapped", RealIPWSGIMiddleware(wsgi_app, **kept), unwrapped),
        Variant("wsgi", REALIP_XFF, "xff2", RealIPWSGIMiddleware(wsgi_app, **trusted), CLIENT),
        Variant(
            "wsgi",
            "realip: Forwarded, 2 entries",
            "forwarded",
            RealIPWSGIMiddleware(wsgi_app, strategy="forwarded", **trusted),
            CLIENT,
        ),
        Variant("wsgi", PROXY_FIX, "xff2", ProxyFix(wsgi_app, x_for=2), CLIENT),
    ]
    toa_missing = ""
    if "toa" in scenarios:
        toa = {"environ": {}, "toa_peers": f"{LB}/32"}
        out.append(
            Variant("wsgi", "realip: TOA answer (gunicorn.socket)", "toa", RealIPWSGIMiddleware(wsgi_app, **toa))
        )
        toa_app, toa_missing = toa_asgi_app()
        if toa_app is not None:
            out.append(Variant("asgi", "realip: TOA answer (uvicorn integration)", "toa", toa_app))
    return [v for v in out if v.scenario in scenarios], toa_missing


def check_answers(all_variants: list[Variant], samples: dict[str, Request]) -> None:
    """Every compared middleware must give the same answer on the same request, or the comparison is unfair."""
    wrong = []
    for v in all_variants:
        if v.expect is not None:
            got = answer(v.interface, v.app, samples[v.scenario])
            if got != v.expect:
                wrong.append(f"{v.interface} {v.name}: {got!r}, expected {v.expect!r}")
    if wrong:
        raise SystemExit("the compared middlewares disagree, so their timings cannot be compared:\n" + "\n".join(wrong))


# --------------------------------------------------------------------------- measuring


def measure(p: dict[str, Any]) -> dict[str, Any]:
    """Interleaved rounds: in each, every column's requests are built once and every variant
    times them, in a new random order. Raw ns per request by interface, row, column."""
    scenarios: list[str] = p["scenarios"]
    all_variants, toa_missing = variants(scenarios)
    connections = Connections()
    serial = Serial()
    keep = connections.for_column("keep-alive", scenarios, 1, serial)
    samples = {sc: requests_for(sc, "keep-alive", keep[kind_of(sc)], serial)[0] for sc in scenarios}
    check_answers(all_variants, samples)
    raw: dict[str, dict[str, dict[str, list[float]]]] = {"asgi": {}, "wsgi": {}}
    scenario_of: dict[str, dict[str, str]] = {"asgi": {}, "wsgi": {}}
    for v in all_variants:
        raw[v.interface][v.name] = {c: [] for c in COLUMNS}
        scenario_of[v.interface][v.name] = v.scenario
    # A new-connection batch holds n connections of each kind at once (the open-file limit decides).
    n = min(p["toa_batch"] if scenarios == ["toa"] else p["n"], connections_possible() // 2)
    for _ in range(p["repeats"]):
        for column in COLUMNS:
            by_kind = connections.for_column(column, scenarios, n, serial)
            reqs = {sc: requests_for(sc, column, by_kind[kind_of(sc)], serial) for sc in scenarios}
            order = list(all_variants)
            random.shuffle(order)
            for v in order:
                raw[v.interface][v.name][column].append(time_requests(v.interface, v.app, reqs[v.scenario]))
            if column in ("new conn", "cold"):  # the others are kept open
                for batch in by_kind.values():
                    for connection in batch:
                        connection.close()
    connections.close()
    return {
        "n": n,
        "overhead": raw,
        "scenarios": scenario_of,
        "asgi_toa_missing": toa_missing,
        "lookup": measure_lookup(p),
        "preloaded": bool(os.environ.get("LD_PRELOAD")),
    }


def merge(main: dict[str, Any], toa: dict[str, Any]) -> dict[str, Any]:
    """The two children's results as one: the TOA child's rows, lookup and emulator added to the main one's."""
    for interface in ("asgi", "wsgi"):
        main["overhead"][interface].update(toa["overhead"][interface])
        main["scenarios"][interface].update(toa["scenarios"][interface])
    main.update(lookup=toa["lookup"], preloaded=toa["preloaded"], asgi_toa_missing=toa["asgi_toa_missing"])
    return main


def overheads(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """ns above the pass-through on the same requests, by interface, row, column."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for interface, rows in results["overhead"].items():
        scenario_of = results["scenarios"][interface]
        out[interface] = {
            name: {c: paired_overhead(cols[c], rows[baseline_of(scenario_of[name])][c]) for c in COLUMNS}
            for name, cols in rows.items()
            if name != "app alone" and not name.startswith("pass-through")
        }
    return out


# --------------------------------------------------------------------------- report


def report(results: dict[str, Any], p: dict[str, Any], host_lookup: dict[str, Any], toa_note: str) -> str:
    import statistics

    over = overheads(results)
    parts = [
        "## Per-request overhead in-process",
        "",
        "CPU time per request (the measuring thread's) above the pass-through middleware on the same requests: "
        f"the median over {p['repeats']} interleaved rounds (a new random order each) of the difference within a "
        f"round, {results['n']:,} requests per variant and round ({p['toa_batch']} for the TOA rows), each on a real "
        "loopback connection. keep-alive: the same connection's next request; pool: the same, on "
        f"{POOL_SIZE} kept-alive connections from the same host in turn; new conn: each request on a new "
        "connection from the trusted proxy, same headers; cold: a new connection and a new client each request. "
        f"Proxy rows: peer {PROXY}, `X-Forwarded-For: {CLIENT}, {HOP}`, realip `trusted_proxies={TRUSTED!r}`, "
        f"ProxyHeadersMiddleware `trusted_hosts={TRUSTED!r}`, ProxyFix `x_for=2`: all three answer {CLIENT} "
        f"(checked before timing). Unwrap rows: peer ::ffff:{MAPPED_FROM} (dual-stack listener).",
        f"TOA rows: {toa_note}",
    ]
    if results["asgi_toa_missing"]:
        parts.append(f"ASGI TOA row: n/a ({results['asgi_toa_missing']}).")
    for interface in ("asgi", "wsgi"):
        raw = results["overhead"][interface]
        rows = [
            [label, *(fmt_ns(statistics.median(raw[name][c])) for c in COLUMNS)]
            for name, label in (
                ("app alone", "app alone, no middleware (total)"),
                (BASELINE, "pass-through, the baseline (total)"),
            )
        ]
        rows += [[name, *(fmt_ns(cols[c]) for c in COLUMNS)] for name, cols in over[interface].items()]
        parts += ["", f"### {interface.upper()}", "", table(["variant", *COLUMNS], rows)]
    lookups = [["this host", host_lookup["detail"], fmt_ns(host_lookup["ns"])]]
    if results["preloaded"]:
        lookups.append(["TOA emulator preloaded", results["lookup"]["detail"], fmt_ns(results["lookup"]["ns"])])
    parts += [
        "",
        "## One TOA lookup (realip.toa.lookup on a real accepted socket, best of the repeats)",
        "",
        table(["where", "answer", "per lookup"], lookups),
    ]
    return "\n".join(parts)


def goals(results: dict[str, Any]) -> list[Goal]:
    over = overheads(results)
    rows = [
        ("ASGI keep-alive, trusted 2-entry XFF", "asgi", REALIP_XFF, PROXY_HEADERS, "keep-alive", 0.30),
        ("WSGI keep-alive, trusted 2-entry XFF", "wsgi", REALIP_XFF, PROXY_FIX, "keep-alive", 0.15),
        ("ASGI unwrap-only", "asgi", REALIP_UNWRAP, REWRITE, "keep-alive", 1.10),
        ("WSGI unwrap-only", "wsgi", REALIP_UNWRAP, REWRITE, "keep-alive", 1.10),
        ("ASGI new connection, trusted 2-entry XFF", "asgi", REALIP_XFF, PROXY_HEADERS, "new conn", 0.50),
        ("WSGI new connection, trusted 2-entry XFF", "wsgi", REALIP_XFF, PROXY_FIX, "new conn", 1.0),
    ]
    short = {PROXY_HEADERS: "ProxyHeadersMiddleware", PROXY_FIX: "ProxyFix", REWRITE: "rewrite-only yardstick"}
    return [
        Goal(f"{label} vs {short[theirs]}", over[interface][mine][column], over[interface][theirs][column], limit)
        for label, interface, mine, theirs, column, limit in rows
    ]


def child(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.common import pin_to_one_cpu, quiet_realip_log

    quiet_realip_log()
    pin_to_one_cpu()
    return measure(p)
