"""Memory under hostile input: distinct peers and header values, then what realip keeps.

Both middlewares trust the proxy and 10.0.0.0/8 and get, per step, ``memory_values`` requests each
carrying something never seen before (a new peer, a new client in ``X-Forwarded-For``,
a new garbage value, a new 8 KiB value twice, new clients again). After each step: the
process's RSS, and what realip says it keeps through its one interface,
``middleware.memory.stats()`` (per cache: ``entries``, ``limit``, ``longest_key``).
Until that interface exists the cache columns read "n/a".
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import Any

from benchmarks.common import (
    HOP,
    PROXY,
    TRUSTED,
    Request,
    Serial,
    asgi_app,
    receive,
    send,
    start_response,
    table,
    wsgi_app,
)

STEPS = (
    "peers",
    "X-Forwarded-For values",
    "garbage values",
    "8 KiB values",
    "8 KiB values",
    "X-Forwarded-For values",
)


def rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def stats(asgi: Any, wsgi: Any) -> dict[str, dict[str, int]] | None:
    """Every cache realip reports, named ``ASGI ...`` / ``WSGI ...`` (unprefixed, once, when both
    middlewares share one memory); ``None`` while ``middleware.memory.stats()`` does not exist."""
    memories: list[Any] = [getattr(asgi, "memory", None), getattr(wsgi, "memory", None)]
    if not all(callable(getattr(memory, "stats", None)) for memory in memories):
        return None
    if memories[0] is memories[1]:
        return {name: dict(numbers) for name, numbers in memories[0].stats().items()}
    return {
        f"{label} {name}": dict(numbers)
        for label, memory in zip(("ASGI", "WSGI"), memories, strict=True)
        for name, numbers in memory.stats().items()
    }


def request(kind: str, i: int) -> Request:
    port = Serial.port(i)
    if kind == "peers":
        return Request((f"::ffff:{Serial.address(i)}", port), [])
    if kind == "X-Forwarded-For values":
        return Request((PROXY, port), [("x-forwarded-for", f"{Serial.address(i)}, {HOP}")])
    if kind == "garbage values":
        return Request((PROXY, port), [("x-forwarded-for", f"<junk {i}>, {HOP}")])
    # 8 KiB: a different client left of ~60 trusted hops, padded past any length cap
    pad = "x" * (8200 - len(LONG_TAIL))
    return Request((PROXY, port), [("x-forwarded-for", f"{pad}{i}, {Serial.address(i)}, {LONG_TAIL}")])


LONG_TAIL = ", ".join(f"10.1.{i >> 8}.{i & 255}" for i in range(1, 60))  # ~700 characters of trusted proxies


def measure(p: dict[str, Any]) -> dict[str, Any]:
    from realip import RealIPMiddleware, RealIPWSGIMiddleware

    options = {"environ": {}, "trusted_proxies": TRUSTED}
    asgi = RealIPMiddleware(asgi_app, **options)
    wsgi = RealIPWSGIMiddleware(wsgi_app, **options)
    n = p["memory_values"]
    serial = Serial()

    def row(after: str) -> dict[str, Any]:
        gc.collect()
        return {"after": after, "rss_kib": rss_kib(), "caches": stats(asgi, wsgi)}

    rows = [row("start")]
    for kind in STEPS:
        for _ in range(n):
            r = request(kind, serial.next())
            with contextlib.suppress(StopIteration):
                asgi(r.scope(), receive, send).send(None)
            wsgi(r.environ(), start_response)
        rows.append(row(f"+{n:,} distinct {kind}"))
    return {"rows": rows, "values": n}


def report(results: dict[str, Any]) -> str:
    body = []
    for r in results["rows"]:
        caches = r["caches"]
        cells = ["n/a", "n/a", "n/a"]
        if caches:
            largest = max(caches, key=lambda name: caches[name]["entries"])
            cells = [
                f"{sum(c['entries'] for c in caches.values()):,}",
                f"{caches[largest]['entries']:,} of {caches[largest]['limit']:,} ({largest})",
                f"{max(c['longest_key'] for c in caches.values()):,}",
            ]
        elif caches is not None:
            cells = ["0", "-", "0"]
        body.append([r["after"], f"{r['rss_kib'] / 1024:.1f}", *cells])
    last = results["rows"][-1]["caches"]
    if last is None:
        verdict = "n/a: the middlewares have no `memory.stats()` yet"
    else:
        over = [
            f"{name} ({c['entries']:,} > {c['limit']:,})"
            for r in results["rows"]
            for name, c in (r["caches"] or {}).items()
            if c["entries"] > c["limit"]
        ]
        verdict = "yes" if not over else "NO: " + ", ".join(over)
        verdict += f"; caches reported ({len(last)}): {', '.join(last)}"
    return "\n".join(
        [
            f"## Memory: {results['values']:,} distinct values per step, both middlewares",
            "",
            table(["after", "RSS MiB", "entries, all caches", "largest cache", "longest key"], body),
            "",
            f"Every cache within its limit after every step: {verdict}.",
        ]
    )


def child(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.common import quiet_realip_log

    quiet_realip_log()
    return measure(p)
