"""``make bench`` runs: the benchmark script in its quick mode (no wrk, tiny counts).

Nothing here looks at a timing: the numbers of a quick run mean nothing, and timings
belong in docs/performance.md, not in assertions.
"""

from __future__ import annotations

import json
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
            assert set(columns) == {"keep-alive", "new conn", "cold"}
    assert results["e2e"] == {"skipped": "--quick"}
    assert results["lookup_host"]["status"] in ("no-module", "none", "found", "unavailable", "error")
    assert len(results["memory"]["rows"]) == 7
