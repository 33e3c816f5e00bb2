#!/usr/bin/env python3
"""realip's benchmarks in one command: ``make bench`` (``.venv/bin/python benchmarks/run.py``).

One run measures what issue #11's goals name and prints, under "Targets", each goal's
ratio with a pass/miss mark. The parts (docs/performance.md explains the method):

* ``inproc.py``: overhead per request in-process, ASGI and WSGI, against uvicorn's
  ``ProxyHeadersMiddleware``, Werkzeug's ``ProxyFix`` and a rewrite-only yardstick, in
  three columns (keep-alive, new connection, cold); and one TOA lookup;
* ``hostile.py``: the cost by number of ``X-Forwarded-For`` entries, up to 1,000, and of a
  64 KiB hostile value;
* ``memory.py``: what realip keeps under a flood of distinct peers and values;
* ``e2e.py``: end to end under ``wrk``, all servers side by side on one CPU, requests per
  server CPU-second.

The in-process parts each run in a child process of their own. The TOA rows run in a
second ``inproc`` child with the TOA emulator preloaded (``LD_PRELOAD`` works only at
process start), so they time a real ``FOUND`` answer; every other row runs on the host
as it is. ``--quick`` runs everything but wrk with tiny counts (a smoke test: the
numbers mean nothing); ``--json PATH`` also writes the raw results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import e2e, hostile, inproc, memory  # noqa: E402
from benchmarks.common import Goal, goals_table, machine  # noqa: E402

CHILDREN = {"inproc": inproc.child, "hostile": hostile.child, "memory": memory.child}


def params_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "n": 60,
            "repeats": 2,
            "toa_batch": 20,
            "scaling_n": 20,
            "long_n": 4,
            "scaling_repeats": 2,
            "lookups": 200,
            "memory_values": 3000,
            "quick": True,
        }
    return {
        "n": 2000,
        "repeats": 13,
        "toa_batch": 400,
        "scaling_n": 1000,
        "long_n": 100,
        "scaling_repeats": 9,
        "lookups": 20000,
        "memory_values": 20_000,
        "quick": False,
    }


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
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def emulator_env(tmp: Path) -> tuple[dict[str, str], str]:
    """LD_PRELOAD of the TOA emulator, and what the TOA rows time."""
    if shutil.which("gcc") is None:
        return {}, "gcc not found: the TOA rows run without the emulator (this host's own answer)"
    from tests import toa_emulator

    try:
        library = toa_emulator.build(tmp / "toa")
    except RuntimeError as exc:
        return {}, f"the TOA emulator did not build ({exc}); the TOA rows run without it"
    note = (
        f"the TOA emulator is preloaded (tests/toa_emulator): a connection from {inproc.LB} (a trusted load "
        "balancer) gets a real FOUND answer, [2001:db8::5]:40000"
    )
    return toa_emulator.env({inproc.LB: inproc.TOA_CLIENT}, None, library=library), note


def report(out: dict[str, Any], goals: list[Goal]) -> str:
    lines = [f"realip benchmarks: {out['when']}", out["machine"], ""]
    if out["quick"]:
        lines += ["QUICK MODE: tiny counts, the numbers mean nothing (a smoke test).", ""]
    p = out["params"]
    lines += [
        inproc.report(out["inproc"], p, out["lookup_host"], out["toa_note"]),
        "",
        hostile.report(out["hostile"], p),
        "",
        memory.report(out["memory"]),
        "",
        e2e.report(out["e2e"]),
        "",
        "## Targets (issue #11's goals)",
        "",
        "ratio = realip / reference. In-process: CPU time per request above a pass-through middleware on the "
        "same requests; end to end: requests per server CPU-second.",
        "",
        goals_table(goals),
        "",
        f"{sum(g.met for g in goals)} of {len(goals)} goals met"
        + ("" if "samples" in out["e2e"] else f" (end to end not run: {out['e2e']['skipped']})")
        + f"; {out['seconds']:.0f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts, no wrk: proves it runs, numbers meaningless")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end part (wrk)")
    parser.add_argument("--e2e-duration", type=float, default=3, help="seconds per round (default 3)")
    parser.add_argument("--e2e-rounds", type=int, default=20, help="rounds, all servers at once (default 20)")
    parser.add_argument("--e2e-connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--e2e-parts",
        action="store_true",
        help="also uvicorn + realip's two parts apart (realip's protocol alone; the middleware under "
        "uvicorn's protocol): eight servers share the CPU instead of six, so every row reads lower",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        json.dump(CHILDREN[args.child](json.loads(args.params)), sys.stdout)
        return 0
    start = time.monotonic()

    def stage(what: str) -> None:
        print(f"[{time.monotonic() - start:5.0f} s] {what} ...", file=sys.stderr, flush=True)

    p = params_for(args.quick)
    out: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "params": p,
        "quick": args.quick,
    }
    with tempfile.TemporaryDirectory(prefix="realip-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env, out["toa_note"] = emulator_env(tmp)
        stage("in-process overhead, ASGI and WSGI")
        without_toa = run_child("inproc", {**p, "scenarios": inproc.WITHOUT_TOA})
        out["inproc"] = inproc.merge(without_toa, run_child("inproc", {**p, "scenarios": ["toa"]}, env))
        out["lookup_host"] = inproc.measure_lookup(p)
        stage("long and hostile X-Forwarded-For")
        out["hostile"] = run_child("hostile", p)
        stage("memory under distinct values")
        out["memory"] = run_child("memory", p)
        if args.quick or args.no_e2e:
            out["e2e"] = {"skipped": "--quick" if args.quick else "--no-e2e"}
        else:
            stage("end to end with wrk, all servers side by side")
            out["e2e"] = e2e.run(args.e2e_duration, args.e2e_rounds, args.e2e_connections, tmp, parts=args.e2e_parts)
    goals = [*inproc.goals(out["inproc"]), *hostile.goals(out["hostile"]), *e2e.goals(out["e2e"])]
    out["seconds"] = time.monotonic() - start
    out["goals"] = [g.as_dict() for g in goals]
    print(report(out, goals))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
