"""Every file in examples/ runs: the demo end to end (the apps run in test_mapped_peers)."""

from __future__ import annotations

import subprocess
import sys

from .support.servers import EXAMPLES, ROOT


def test_demo_prints_what_the_app_saw_for_ipv4_and_ipv6_clients() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[1]: line.split() for line in lines if line.startswith(("IPv4", "IPv6"))}
    assert rows["127.0.0.1"][2].startswith("[::ffff:127.0.0.1]:")
    assert rows["127.0.0.1"][3].startswith("127.0.0.1:") and rows["127.0.0.1"][4] == "mapped"
    assert rows["127.0.0.2"][3].startswith("127.0.0.2:")
    assert rows["::1"][3].startswith("[::1]:") and rows["::1"][4] == "peer"
