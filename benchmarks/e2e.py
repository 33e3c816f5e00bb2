"""End to end, side by side: every server loaded at once on the same CPU, requests per server CPU-second.

All six servers (eight with ``--e2e-parts``) are started first and pinned to one CPU
(``sched_setaffinity`` before they exec, so gunicorn's worker inherits it); ``wrk`` runs
on the other CPUs. Then short rounds: in each, every server gets its own ``wrk`` at the
same time (started in a new random order), so they share the one CPU and whatever else
the machine does at that moment; each server's CPU time (utime + stime of its processes,
from ``/proc/PID/stat``) is read before and after the round. A server's figure is its
requests over its CPU-seconds, all rounds together. Time that other processes take is
not counted against a server, and what they do to the CPU (caches, a busy sibling
hyperthread) they do to all of them alike; one-after-the-other requests-per-second runs
on a shared two-core machine spread by tens of percent. The second copy of bare uvicorn
is the method's resolution: it should read the same as the first.

Every server gets the same requests: ``X-Forwarded-For: 203.0.113.5, 127.0.0.9`` from
127.0.0.1, both trusted where anything is trusted (127.0.0.0/8); checked before timing
by what each app answers.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import CLIENT, ROOT, Goal, table

XFF_SENT = f"{CLIENT}, 127.0.0.9"
BARE, BARE_COPY = "uvicorn bare", "uvicorn bare, 2nd copy"
REALIP, PROXY_HEADERS = "uvicorn + realip", "uvicorn --proxy-headers"
GUNICORN, GUNICORN_REALIP = "gunicorn sync bare", "gunicorn sync + realip"
#: For information (no goal): the two parts of uvicorn + realip apart.
PROTOCOL_ONLY = "uvicorn, realip's protocol only"
MIDDLEWARE_ONLY = "uvicorn + realip, uvicorn's protocol"
#: name -> (server, variant of benchmarks/e2e_app.py, the client the app must see)
Servers = dict[str, tuple[str, str, str]]
#: The servers of every run: the goals' rows.
SERVERS: Servers = {
    BARE: ("uvicorn", "bare", "127.0.0.1"),
    BARE_COPY: ("uvicorn", "bare", "127.0.0.1"),
    REALIP: ("uvicorn", "realip", CLIENT),
    PROXY_HEADERS: ("uvicorn", "proxy-headers", CLIENT),
    GUNICORN: ("gunicorn", "bare", "127.0.0.1"),
    GUNICORN_REALIP: ("gunicorn", "realip", CLIENT),
}
#: ``--e2e-parts``: uvicorn + realip's two parts apart, for information. Eight servers
#: share the CPU then, each gets less of it, and every row reads lower than with six.
PARTS: Servers = {
    PROTOCOL_ONLY: ("uvicorn", "protocol", "127.0.0.1"),
    MIDDLEWARE_ONLY: ("uvicorn", "middleware", CLIENT),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def argv_for(server: str, variant: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, str(ROOT / "benchmarks" / "e2e_app.py"), str(port), variant]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "1",
        "--worker-class",
        "sync",
        "--log-level",
        "warning",
        "--bind",
        f"127.0.0.1:{port}",
        f"benchmarks.e2e_app:wsgi({variant!r})",
    ]


def pinned(cpus: set[int]) -> Callable[[], None]:
    def pin() -> None:  # runs in the child before exec: everything it starts inherits the CPU set
        os.sched_setaffinity(0, cpus)

    return pin


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (gunicorn: the master and its worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (fields 14 and 15 of /proc/PID/stat), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def wait_ready(name: str, process: subprocess.Popen[bytes], port: int, log: Path, expect: str) -> None:
    """Until the server answers; then its app must have seen ``expect`` as the client."""
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/", headers={"X-Forwarded-For": XFF_SENT})
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            connection.close()
            if response.status == 200:
                if body != expect:
                    raise SystemExit(f"{name}: the app saw {body!r}, expected {expect!r}: not configured as meant")
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not answer within 30 s")
        time.sleep(0.1)


def wrk(path: str, cpus: set[int], port: int, duration: float, connections: int) -> subprocess.Popen[str]:
    """A wrk run against ``port``, started on ``cpus``."""
    header = f"X-Forwarded-For: {XFF_SENT}"
    argv = [path, "-t1", f"-c{connections}", f"-d{duration:g}s", "-H", header, f"http://127.0.0.1:{port}/"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pinned(cpus))


def wrk_result(process: subprocess.Popen[str], timeout: float) -> tuple[int, float, int]:
    """(requests, seconds, errors) of a wrk run, once it is done."""
    stdout, stderr = process.communicate(timeout=timeout)
    found = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", stdout)
    if process.returncode != 0 or found is None:
        raise SystemExit(f"wrk failed:\n{stdout}\n{stderr}")
    seconds = float(found.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[found.group(3)]
    errors = 0
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", stdout)
    socket_errors = re.search(r"Socket errors: .*", stdout)
    errors += int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(x) for x in re.findall(r"\d+", socket_errors.group(0)))
    return int(found.group(1)), seconds, errors


@contextlib.contextmanager
def started(
    tmp: Path, cpus: set[int], wanted: Servers = SERVERS
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], int]]]:
    """Every server of ``wanted`` at once, pinned to ``cpus``, each checked to answer as configured:
    name -> (process, port). Stopped (their process groups, which they were started in) on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALIP_") and k != "LD_PRELOAD"}
    env["PYTHONPATH"] = str(ROOT)
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    logs = []
    try:
        for name, (server, variant, _) in wanted.items():
            port = free_port()
            log = open(tmp / f"e2e-{len(servers)}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            process = subprocess.Popen(
                argv_for(server, variant, port),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pinned(cpus),
                start_new_session=True,
            )
            servers[name] = (process, port)
        for i, (name, (process, port)) in enumerate(servers.items()):
            wait_ready(name, process, port, tmp / f"e2e-{i}.log", wanted[name][2])
        for name, (process, _) in servers.items():
            for pid in process_tree(process.pid):
                if os.sched_getaffinity(pid) != cpus:
                    raise SystemExit(f"{name}: process {pid} is not pinned to CPU {cpus}")
        yield servers
    finally:
        for process, _ in servers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in servers.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for log in logs:
            log.close()


def run(duration: float, rounds: int, connections: int, tmp: Path, *, parts: bool = False) -> dict[str, Any]:
    path = shutil.which("wrk")
    if path is None:
        return {"skipped": "wrk not found (apt-get install wrk)"}
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {cpus[0]}
    wrk_cpus = set(cpus[1:]) or server_cpus
    wanted = {**SERVERS, **PARTS} if parts else SERVERS
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in wanted}
    with started(tmp, server_cpus, wanted) as servers:
        for r in range(-1, rounds):  # round -1 warms every server up and is not counted
            pids = {name: process_tree(process.pid) for name, (process, _) in servers.items()}
            before = {name: cpu_seconds(pids[name]) for name in servers}
            order = list(servers)
            random.shuffle(order)
            seconds = duration if r >= 0 else 1
            running = {name: wrk(path, wrk_cpus, servers[name][1], seconds, connections) for name in order}
            done = {name: wrk_result(process, seconds + 30) for name, process in running.items()}
            for name in servers:
                requests, wall, errors = done[name]
                cpu = cpu_seconds(pids[name]) - before[name]
                if r >= 0:
                    samples[name].append({"requests": requests, "seconds": wall, "cpu": cpu, "errors": errors})
    return {
        "samples": samples,
        "setup": f"all {len(wanted)} servers pinned to CPU {cpus[0]} and loaded at once, each by its own "
        f"`wrk -t1 -c{connections} -d{duration:g}s` on CPU {','.join(map(str, sorted(wrk_cpus)))}; {rounds} rounds "
        "(+1 warm-up); uvicorn: 1 worker, httptools, uvloop, no access log; gunicorn: 1 sync worker (a new "
        "connection per request)",
    }


def per_cpu_second(samples: list[dict[str, float]]) -> float:
    """Requests over server CPU-seconds, all rounds together (a reading is 1/CLK_TCK coarse: the sum is finer)."""
    cpu = sum(s["cpu"] for s in samples)
    return sum(s["requests"] for s in samples) / cpu if cpu > 0 else 0.0


def per_round(samples: list[dict[str, float]]) -> list[float]:
    return [s["requests"] / s["cpu"] for s in samples if s["cpu"] > 0]


def report(results: dict[str, Any]) -> str:
    if "samples" not in results:
        return f"## End to end\n\nskipped: {results['skipped']}"
    samples = results["samples"]
    rate = {name: per_cpu_second(s) for name, s in samples.items()}
    rows = []
    for name, runs in samples.items():
        rounds = per_round(runs)
        rows.append(
            [
                name,
                f"{rate[name]:,.0f}",
                f"{statistics.median(rounds):,.0f}" if rounds else "-",
                f"{min(rounds):,.0f}-{max(rounds):,.0f}" if rounds else "-",
                f"{sum(s['requests'] for s in runs) / sum(s['seconds'] for s in runs):,.0f}",
                f"{sum(s['cpu'] for s in runs) / sum(s['seconds'] for s in runs):.0%}",
                str(sum(int(s["errors"]) for s in runs)),
            ]
        )
    copies = [a / b for a, b in zip(per_round(samples[BARE_COPY]), per_round(samples[BARE]), strict=False)]
    bare = (rate[BARE] + rate[BARE_COPY]) / 2
    spread = rate[BARE_COPY] / rate[BARE] - 1
    header = ["server", "req per CPU-s", "median of rounds", "rounds", "wall req/s", "server CPU", "errors"]
    return "\n".join(
        [
            "## End to end, side by side (requests per server CPU-second)",
            "",
            results["setup"] + ".",
            f"Every request: `X-Forwarded-For: {XFF_SENT}` from 127.0.0.1; trusted 127.0.0.0/8 by realip and "
            "`--forwarded-allow-ips`. req per CPU-s: all rounds together. wall req/s and server CPU (the share of "
            "one CPU each got) are what the shared machine allowed, not compared.",
            "",
            table(header, rows),
            "",
            f"Resolution of the method: the two copies of bare uvicorn differ by {spread:+.1%}"
            + (f" (single rounds: {min(copies) - 1:+.0%} to {max(copies) - 1:+.0%})." if copies else "."),
            *(["", parts(rate, bare)] if PROTOCOL_ONLY in rate else []),
        ]
    )


def parts(rate: dict[str, float], bare: float) -> str:
    """What ``--e2e-parts`` shows: uvicorn + realip's two parts apart, against bare uvicorn."""
    return (
        "uvicorn + realip apart, against bare uvicorn (mean of the 2 copies), for information: "
        "realip's protocol with the app alone (the server integration by itself) "
        f"{rate[PROTOCOL_ONLY] / bare:.2f}; RealIPMiddleware under uvicorn's own protocol (its own "
        f"coroutine, as `app.add_middleware` runs it) {rate[MIDDLEWARE_ONLY] / bare:.2f}; both together "
        f"(the goal's row: the protocol runs the middleware's decision) {rate[REALIP] / bare:.2f}."
    )


def goals(results: dict[str, Any]) -> list[Goal]:
    if "samples" not in results:
        return []
    rate = {name: per_cpu_second(s) for name, s in results["samples"].items()}
    bare = (rate[BARE] + rate[BARE_COPY]) / 2
    return [
        Goal("end to end: uvicorn + realip vs bare uvicorn (mean of 2 copies)", rate[REALIP], bare, 0.95, True, "rate"),
        Goal(
            "end to end: uvicorn + realip vs uvicorn --proxy-headers",
            rate[REALIP],
            rate[PROXY_HEADERS],
            1.05,
            True,
            "rate",
        ),
        Goal(
            "end to end: gunicorn sync + realip vs bare gunicorn sync",
            rate[GUNICORN_REALIP],
            rate[GUNICORN],
            0.95,
            True,
            "rate",
        ),
    ]
