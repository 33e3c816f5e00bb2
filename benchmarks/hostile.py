"""Long and hostile ``X-Forwarded-For`` values: the cost by number of entries, and a 64 KiB one.

Every request comes on the trusted proxy's kept-alive connection (a real loopback
connection from 127.0.0.2) with a text never sent before, as a client varying what it
sends makes it: ``N entries`` is a new client address followed by ``N - 1`` trusted
proxies (10.0.x.y); ``64 KiB hostile`` is 65,536 characters of addresses a client wrote
itself, then the client as the proxy saw it and one trusted proxy (``..., 203.0.113.5,
10.0.0.1``). realip and ``ProxyHeadersMiddleware`` trust 127.0.0.2 and 10.0.0.0/8;
``ProxyFix`` gets ``x_for`` = the number of proxies (``N``, or 2 for the hostile value).
Overhead: CPU time above the pass-through on the same requests, the median over
interleaved rounds of the difference within a round.
"""

from __future__ import annotations

import random
from typing import Any

from benchmarks.common import (
    CLIENT,
    HOP,
    PROXY,
    TRUSTED,
    Goal,
    Listener,
    PassThrough,
    PassThroughWSGI,
    Request,
    Serial,
    answer,
    asgi_app,
    fmt_ns,
    paired_overhead,
    table,
    time_requests,
    wsgi_app,
    xff_value,
)

ENTRIES = (1, 2, 8, 32, 1000)
HOSTILE = "64 KiB hostile"
HOSTILE_LENGTH = 65536
TAIL = f", {CLIENT}, {HOP}"  # what the two proxies appended to the client's own text
# Addresses a client claims, as many as fit: a naive parser splits and strips every one.
JUNK = ", ".join(f"198.51.{j >> 8 & 255}.{j & 255}" for j in range(HOSTILE_LENGTH // 10))
APPS = ("pass-through", "realip", "peer")  # "peer": ProxyHeadersMiddleware (ASGI) or ProxyFix (WSGI)
LABELS = {
    ("asgi", "realip"): "ASGI realip",
    ("asgi", "peer"): "ProxyHeadersMiddleware",
    ("wsgi", "realip"): "WSGI realip",
    ("wsgi", "peer"): "ProxyFix",
}


def cases() -> list[str]:
    return [f"{k:,} {'entry' if k == 1 else 'entries'}" for k in ENTRIES] + [HOSTILE]


def entries_of(case: str) -> int:
    return 2 if case == HOSTILE else int(case.split()[0].replace(",", ""))


def value(case: str, i: int) -> str:
    """Request ``i``'s text for ``case``: never the same twice."""
    if case == HOSTILE:
        return (f"198.19.{i >> 8 & 255}.{i & 255}, {JUNK}")[: HOSTILE_LENGTH - len(TAIL)] + TAIL
    return xff_value(entries_of(case), Serial.address(i))


def apps() -> dict[str, dict[str, dict[str, Any]]]:
    """case -> interface -> app name -> app."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
    from werkzeug.middleware.proxy_fix import ProxyFix

    from realip import RealIPMiddleware, RealIPWSGIMiddleware

    trusted: dict[str, Any] = {"environ": {}, "trusted_proxies": TRUSTED}
    return {
        case: {
            "asgi": {
                "pass-through": PassThrough(asgi_app),
                "realip": RealIPMiddleware(asgi_app, **trusted),
                "peer": ProxyHeadersMiddleware(asgi_app, trusted_hosts=TRUSTED),
            },
            "wsgi": {
                "pass-through": PassThroughWSGI(wsgi_app),
                "realip": RealIPWSGIMiddleware(wsgi_app, **trusted),
                "peer": ProxyFix(wsgi_app, x_for=entries_of(case)),
            },
        }
        for case in cases()
    }


def measure(p: dict[str, Any]) -> dict[str, Any]:
    all_apps = apps()
    serial = Serial()
    listener = Listener()
    connection = listener.connect_from(PROXY)  # the proxy's kept-alive connection

    def request(case: str) -> Request:
        return Request(connection.peer, [("x-forwarded-for", value(case, serial.next()))], connection.sock)

    sample = {case: request(case) for case in cases()}
    answers = {
        case: {
            LABELS[iface, name]: answer(iface, app, sample[case])
            for iface, named in by_iface.items()
            for name, app in named.items()
            if name != "pass-through"
        }
        for case, by_iface in all_apps.items()
    }
    raw: dict[str, dict[str, dict[str, list[float]]]] = {
        case: {iface: {name: [] for name in APPS} for iface in ("asgi", "wsgi")} for case in cases()
    }
    jobs = [(case, iface, name) for case in cases() for iface in ("asgi", "wsgi") for name in APPS]
    for _ in range(p["scaling_repeats"]):
        reqs = {}
        for case in cases():
            n = p["long_n"] if entries_of(case) > 32 or case == HOSTILE else p["scaling_n"]
            reqs[case] = [request(case) for _ in range(n)]
        random.shuffle(jobs)
        for case, iface, name in jobs:
            raw[case][iface][name].append(time_requests(iface, all_apps[case][iface][name], reqs[case]))
    connection.close()
    listener.close()
    return {"raw": raw, "answers": answers, "lengths": {case: len(sample[case].headers[0][1]) for case in cases()}}


def overheads(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """case -> interface -> app name -> ns above the pass-through."""
    return {
        case: {
            iface: {name: paired_overhead(times[name], times["pass-through"]) for name in APPS[1:]}
            for iface, times in by_iface.items()
        }
        for case, by_iface in results["raw"].items()
    }


def report(results: dict[str, Any], p: dict[str, Any]) -> str:
    over = overheads(results)
    rows = []
    notes = []
    for case in cases():
        a, w = over[case]["asgi"], over[case]["wsgi"]
        rows.append(
            [
                case,
                f"{results['lengths'][case]:,}",
                fmt_ns(a["realip"]),
                fmt_ns(a["peer"]),
                f"{a['realip'] / a['peer']:.3f}",
                fmt_ns(w["realip"]),
                fmt_ns(w["peer"]),
                f"{w['realip'] / w['peer']:.3f}",
            ]
        )
        seen = results["answers"][case]
        if len(set(seen.values())) > 1:
            notes.append(f"* {case}: the answers differ: " + ", ".join(f"{k} {v}" for k, v in seen.items()) + ".")
    header = [
        "X-Forwarded-For",
        "chars",
        "ASGI realip",
        "ProxyHeadersMiddleware",
        "ratio",
        "WSGI realip",
        "ProxyFix(x_for=n)",
        "ratio",
    ]
    return "\n".join(
        [
            "## Overhead by number of X-Forwarded-For entries, and a hostile 64 KiB one",
            "",
            f"CPU time per request above the pass-through; each request a text never sent before, on the trusted "
            f"proxy's kept-alive connection; median over {p['scaling_repeats']} interleaved rounds of "
            f"{p['scaling_n']:,} requests ({p['long_n']:,} for 1,000 entries and 64 KiB). n: the entries "
            "ProxyFix is told to trust (2 for the hostile value).",
            "",
            table(header, rows),
            *(["", *notes] if notes else []),
        ]
    )


def goals(results: dict[str, Any]) -> list[Goal]:
    over = overheads(results)
    hostile, long = over[HOSTILE]["asgi"], over[cases()[ENTRIES.index(1000)]]["asgi"]
    return [
        Goal("ASGI 64 KiB hostile XFF vs ProxyHeadersMiddleware", hostile["realip"], hostile["peer"], 0.03),
        Goal("ASGI 1,000 trusted entries vs ProxyHeadersMiddleware", long["realip"], long["peer"], 0.06),
    ]


def child(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.common import pin_to_one_cpu, quiet_realip_log

    quiet_realip_log()
    pin_to_one_cpu()
    return measure(p)
