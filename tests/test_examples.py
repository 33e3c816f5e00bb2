"""Every file in examples/ runs: the demo end to end (the apps run in test_mapped_peers)."""

from __future__ import annotations

import re
import subprocess
import sys

from .support.programs import require_program
from .support.servers import EXAMPLES, ROOT


def table(output: str) -> list[dict[str, str]]:
    """The demo's table as dicts, cut at the columns its dashed line marks."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    spans = [m.span() for m in re.finditer(r"-+", lines[rule])]
    names = [lines[rule - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        cells = [line[a : (spans[i + 1][0] if i + 1 < len(spans) else None)].strip() for i, (a, _) in enumerate(spans)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def test_demo_shows_ipv4_ipv6_proxied_and_nat64_clients() -> None:
    require_program("nginx")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    rows = {(r["connects from"], r["via"]): r for r in table(done.stdout)}
    direct = rows[("127.0.0.1", "direct")]
    assert direct["server socket reported"].startswith("[::ffff:127.0.0.1]:")
    assert direct["app saw"].startswith("127.0.0.1:") and direct["source"] == "mapped"
    assert rows[("127.0.0.2", "direct")]["app saw"].startswith("127.0.0.2:")
    assert rows[("::1", "direct")]["app saw"].startswith("[::1]:") and rows[("::1", "direct")]["source"] == "peer"
    assert rows[("127.0.0.3", "direct, forging XFF")]["app saw"].startswith("127.0.0.3:")
    proxied = rows[("127.0.0.2", "nginx, forging XFF")]
    assert proxied["server socket reported"].startswith("[::ffff:127.0.0.10]:")
    assert proxied["app saw"] == "127.0.0.2:0" and proxied["source"] == "x-forwarded-for"
    assert rows[("::1", "nginx, forging XFF")]["app saw"] == "[::1]:0"
    nat64 = rows[("2001:db8::5", "NAT64 LB 127.0.0.5 (TOA)")]
    assert nat64["server socket reported"].startswith("127.0.0.5:")
    assert nat64["app saw"] == "[2001:db8::5]:40000" and nat64["source"] == "toa"
