"""``make bench`` runs: the benchmark script in its quick mode (no wrk, tiny counts), and the
end-to-end servers start and answer as configured.

Nothing here looks at a timing: the numbers of a quick run mean nothing, and timings
belong in docs/performance.md, not in assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_script_runs_in_quick_mode(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for heading in ("## Per-request overhead in-process", "## One TOA lookup", "X-Forwarded-For entries",
                    "## Memory", "## End to end", "## Targets"):  # fmt: skip
        assert heading in done.stdout, heading
    results = json.loads(out.read_text())
    overhead = results["inproc"]["overhead"]
    assert set(overhead) == {"asgi", "wsgi"}
    for rows in overhead.values():
        assert "pass-through (floor)" in rows and any(name.startswith("realip") for name in rows)
        for columns in rows.values():
            assert set(columns) == {"keep-alive", "pool", "new conn", "cold"}
    assert results["e2e"] == {"skipped": "--quick"}
    assert results["lookup_host"]["status"] in ("no-module", "none", "found", "unavailable", "error")
    assert len(results["memory"]["rows"]) == 7
    # Every in-process goal of issue #11 is measured and marked (end to end needs wrk: not in quick mode).
    assert len(results["goals"]) == 8
    for goal in results["goals"]:
        assert goal["met"] in (True, False) and goal["reference"] != 0, goal
    targets = done.stdout.split("## Targets", 1)[1]
    assert targets.count("| pass |") + targets.count("| MISS |") == 8


def test_end_to_end_servers_start_pinned_and_answer_as_configured(tmp_path: Path) -> None:
    """All eight servers at once (``--e2e-parts`` included); ``started`` checks each app saw the client
    it should (the forwarded one behind realip and --proxy-headers, the peer when bare or with realip's
    protocol alone) and that each runs on the one CPU."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import e2e

    cpus = {min(os.sched_getaffinity(0))}
    with e2e.started(tmp_path, cpus, {**e2e.SERVERS, **e2e.PARTS}) as servers:
        assert set(servers) == {*e2e.SERVERS, *e2e.PARTS}
        for process, _ in servers.values():
            assert process.poll() is None
            assert e2e.cpu_seconds(e2e.process_tree(process.pid)) > 0
    assert all(process.poll() is not None for process, _ in servers.values())
