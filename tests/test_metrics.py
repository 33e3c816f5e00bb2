"""realip.metrics: Prometheus counters of what realip decided, exact after a scripted mix.

In-process: nothing is imported or counted until ``enable()``; the recorder's
counters, labels and reasons (each reason from an error realip really makes);
several processes summed through ``PROMETHEUS_MULTIPROC_DIR``.

On real servers (``NEEDS_CALL_SITES``: realip's code must call the recorder;
skipped until it does, except under ``CI=true``, where they must pass):

* uvicorn with realip's protocols, the TOA emulator and the PROXY protocol
  (``docs/snippets/metrics_fastapi.py``): direct clients forging headers, NAT64
  clients, a trusted proxy with good and bad headers, PROXY headers good,
  malformed and too slow; one scrape gives every count exactly;
* gunicorn with two workers and ``PROMETHEUS_MULTIPROC_DIR``
  (``docs/snippets/metrics_flask.py``, ``metrics_gunicorn_conf.py``): the scrape
  sums both workers;
* uvicorn closing a peer that may not send a PROXY header.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import realip.metrics
from realip import RealIPMiddleware, RealIPWSGIMiddleware, Resolution
from realip.metrics import PROXY_REFUSALS, REASONS, TOA_RESULTS, reason_of

from . import toa_emulator
from .support.programs import IN_CI
from .support.servers import ROOT, gunicorn_argv, serve, uvicorn_argv

SNIPPETS = ROOT / "docs" / "snippets"
SOURCES = ("peer", "mapped", "toa", "unix", "proxy-protocol")


def counts(text: str) -> dict[str, float]:
    """``{'realip_answers_total{source="peer"}': 3.0, ...}``: realip's counter samples of a scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("realip_") and sample.name.endswith("_total"):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def expected(
    answers: dict[str, int] | None = None,
    stripped: dict[str, int] | None = None,
    not_believed: dict[str, int] | None = None,
    toa: dict[str, int] | None = None,
    accepted: int = 0,
    refused: dict[str, int] | None = None,
) -> dict[str, float]:
    """Every series a scrape shows: the known label values at 0, plus these counts."""
    found: dict[str, float] = {}
    for source in {*SOURCES, *(answers or {})}:
        found[f'realip_answers_total{{source="{source}"}}'] = (answers or {}).get(source, 0)
    for header, n in (stripped or {}).items():
        found[f'realip_headers_stripped_total{{header="{header}"}}'] = n
    for reason in REASONS:
        found[f'realip_headers_not_believed_total{{reason="{reason}"}}'] = (not_believed or {}).get(reason, 0)
    for result in TOA_RESULTS:
        found[f'realip_toa_lookups_total{{result="{result}"}}'] = (toa or {}).get(result, 0)
    found["realip_proxy_headers_accepted_total"] = accepted
    for reason in PROXY_REFUSALS:
        found[f'realip_proxy_headers_refused_total{{reason="{reason}"}}'] = (refused or {}).get(reason, 0)
    return found


@pytest.fixture
def registry() -> Iterator[Any]:
    """A private registry with realip's counters enabled in it; disabled afterwards."""
    from prometheus_client import CollectorRegistry

    realip.metrics.disable()
    found = CollectorRegistry()
    realip.metrics.enable(found)
    try:
        yield found
    finally:
        realip.metrics.disable()


def scrape(registry: Any) -> dict[str, float]:
    from prometheus_client import generate_latest

    return counts(generate_latest(registry).decode())


# ------------------------------------------------------------------------------ off by default

NOTHING_UNTIL_ENABLED = """
import sys
import realip, realip.asgi, realip.wsgi, realip.metrics, realip.ratelimit, realip.logcontext
assert realip.metrics.METRICS.recorder is None
assert "prometheus_client" not in sys.modules, "imported before enable()"
"""


def test_nothing_is_imported_or_counted_until_enabled() -> None:
    done = subprocess.run([sys.executable, "-c", NOTHING_UNTIL_ENABLED], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # as if the extra were not installed
import realip.metrics
try:
    realip.metrics.enable()
except ImportError as exc:
    print(exc)
"""


def test_enable_without_prometheus_client_names_the_extra() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_PROMETHEUS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'realip[metrics]'" in done.stdout


# ------------------------------------------------------------------------------ the recorder


def test_recorder_counts_with_known_labels_at_zero(registry: Any) -> None:
    recorder = realip.metrics.METRICS.recorder
    assert recorder is not None
    assert scrape(registry) == expected()
    recorder.answer("peer")
    recorder.answer("x-forwarded-for")
    recorder.answer("x-forwarded-for")
    for spelling in ("x-forwarded-for", b"x_forwarded_for", "HTTP_X_FORWARDED_FOR", b"x-real-ip"):
        recorder.stripped(spelling)
    recorder.not_believed("x-forwarded-for: invalid entry 'garbage': not an IP address")
    recorder.not_believed("something new")
    recorder.toa("found")
    recorder.toa("error")
    recorder.proxy_accepted()
    recorder.proxy_refused("timeout")
    assert scrape(registry) == expected(
        answers={"peer": 1, "x-forwarded-for": 2},
        stripped={"x-forwarded-for": 3, "x-real-ip": 1},
        not_believed={"invalid-entry": 1, "other": 1},
        toa={"found": 1, "error": 1},
        accepted=1,
        refused={"timeout": 1},
    )


def test_enable_again_is_the_same_recorder_and_another_registry_is_refused(registry: Any) -> None:
    from prometheus_client import CollectorRegistry

    assert realip.metrics.enable(registry) is realip.metrics.METRICS.recorder
    with pytest.raises(ValueError, match="already enabled"):
        realip.metrics.enable(CollectorRegistry())


def test_disable_removes_the_counters(registry: Any) -> None:
    realip.metrics.disable()
    assert realip.metrics.METRICS.recorder is None
    assert scrape(registry) == {}
    realip.metrics.disable()  # twice: nothing to do


def test_the_endpoint_apps_answer_with_the_counters(registry: Any) -> None:
    import httpx

    assert realip.metrics.METRICS.recorder is not None
    realip.metrics.METRICS.recorder.answer("mapped")
    assert realip.metrics.scrape_registry() is registry

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        assert status.startswith("200")

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "wsgi.url_scheme": "http"}
    text = b"".join(realip.metrics.wsgi_app()(environ, start_response)).decode()
    assert counts(text)['realip_answers_total{source="mapped"}'] == 1

    async def get() -> str:
        transport = httpx.ASGITransport(app=realip.metrics.asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as c:
            return (await c.get("/")).text

    assert counts(asyncio.run(get()))['realip_answers_total{source="mapped"}'] == 1


#: (options, header, value, the reason): errors made by realip's own strategies.
ERRORS = [
    ({}, "x-forwarded-for", "203.0.113.7, garbage", "invalid-entry"),
    ({}, "x-forwarded-for", "203.0.113.7, 1.2.3.4:99999", "invalid-entry"),
    ({"strategy": "forwarded"}, "forwarded", 'for="unterminated', "malformed-element"),
    ({"strategy": "forwarded"}, "forwarded", "for=1.2.3.4, ,", "malformed-element"),
    ({"strategy": "forwarded"}, "forwarded", "proto=https", "malformed-element"),
    ({"strategy": "forwarded"}, "forwarded", "for=_hidden", "not-an-address"),
    ({"strategy": "forwarded"}, "forwarded", "for=unknown", "not-an-address"),
    ({}, "x-forwarded-for", ", ".join(["10.0.0.1"] * 200), "too-long"),  # trusted all the way to the cut
    ({"strategy": "x-forwarded-for:2"}, "x-forwarded-for", "203.0.113.7", "too-few-entries"),
    ({"strategy": "x-real-ip"}, "x-real-ip", "203.0.113.7, 203.0.113.8", "several-values"),
    ({"forwarded_proto": True}, "x-forwarded-proto", "javascript", "bad-scheme"),
]


@pytest.mark.parametrize(("options", "header", "value", "reason"), ERRORS, ids=[e[3] + ":" + e[2][:20] for e in ERRORS])
def test_each_reason_comes_from_an_error_realip_makes(options: dict, header: str, value: str, reason: str) -> None:
    seen: list[Resolution] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["extensions"]["realip"])

    headers = [(header.encode(), value.encode())]
    if header == "x-forwarded-proto":
        headers.append((b"x-forwarded-for", b"203.0.113.7"))
    scope = {"type": "http", "client": ("10.0.0.1", 5555), "server": ("10.0.0.2", 80), "headers": headers}
    middleware = RealIPMiddleware(app, trusted_proxies="10.0.0.1", toa=False, **options)
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    error = seen[0].error
    assert error is not None
    assert reason_of(error) == reason, error


# ------------------------------------------------------------------------------ several processes

COUNT_IN_A_PROCESS = """
import sys
import realip.metrics
recorder = realip.metrics.enable()
for _ in range(int(sys.argv[1])):
    recorder.answer("x-forwarded-for")
recorder.stripped("x-real-ip")
"""

SCRAPE = """
import sys
import realip.metrics
def start_response(status, headers):
    pass
environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "wsgi.url_scheme": "http"}
sys.stdout.write(b"".join(realip.metrics.wsgi_app()(environ, start_response)).decode())
"""


def test_several_processes_are_summed_through_the_multiprocess_directory(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for n in (3, 4):
        done = subprocess.run(
            [sys.executable, "-c", COUNT_IN_A_PROCESS, str(n)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process
    done = subprocess.run([sys.executable, "-c", SCRAPE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == expected(answers={"x-forwarded-for": 7}, stripped={"x-real-ip": 2})


# ------------------------------------------------------------------------------ realip's call sites, in process


def _middlewares_count() -> bool:
    """Whether realip's middlewares call the recorder (the call sites of issue #15 are in)."""
    from prometheus_client import CollectorRegistry

    previous = realip.metrics.METRICS.recorder
    if previous is not None:
        return True
    registry = CollectorRegistry()
    realip.metrics.enable(registry)
    try:

        async def app(scope: Any, receive: Any, send: Any) -> None:
            pass

        scope = {"type": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "headers": []}
        asyncio.run(RealIPMiddleware(app, toa=False)(scope, None, None))  # type: ignore[arg-type]
        return scrape(registry)['realip_answers_total{source="peer"}'] == 1
    finally:
        realip.metrics.disable()


#: Tests that need realip's code to call the recorder (realip.metrics.METRICS.recorder).
NEEDS_CALL_SITES = pytest.mark.skipif(
    not IN_CI and not _middlewares_count(),
    reason="realip's code does not call realip.metrics yet (issue #15 call sites)",
)


@NEEDS_CALL_SITES
def test_asgi_and_wsgi_middlewares_count_in_process(registry: Any) -> None:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        pass

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        return []

    asgi_mw = RealIPMiddleware(asgi, trusted_proxies="10.0.0.1", toa=False)
    wsgi_mw = RealIPWSGIMiddleware(wsgi, trusted_proxies="10.0.0.1", toa=False)

    def asgi_request(peer: str, headers: dict[str, str]) -> None:
        scope = {
            "type": "http", "client": (peer, 5555), "server": ("10.0.0.2", 80),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }  # fmt: skip
        asyncio.run(asgi_mw(scope, None, None))  # type: ignore[arg-type]

    def wsgi_request(peer: str, headers: dict[str, str]) -> None:
        environ = {"REMOTE_ADDR": peer, "REMOTE_PORT": "5555", "SERVER_PORT": "80"}
        environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
        wsgi_mw(environ, None)

    for request in (asgi_request, wsgi_request):
        request("198.51.100.9", {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"})  # stripped
        request("::ffff:198.51.100.9", {})  # mapped
        request("10.0.0.1", {"X-Forwarded-For": "203.0.113.7"})  # believed
        request("10.0.0.1", {"X-Forwarded-For": "203.0.113.7"})  # again: the keep-alive memo, counted too
        request("10.0.0.1", {"X-Forwarded-For": "203.0.113.7, garbage"})  # not believed
        request("10.0.0.1", {"X-Forwarded-For": "203.0.113.7, garbage"})  # again: never remembered
    assert scrape(registry) == expected(
        answers={"peer": 6, "mapped": 2, "x-forwarded-for": 4},
        stripped={"x-forwarded-for": 2, "x-real-ip": 2},
        not_believed={"invalid-entry": 4},
    )


# ------------------------------------------------------------------------------ real servers

REQUEST = b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n"


def exchange(port: int, source: str, data: bytes, *, pause: float = 0.0, timeout: float = 10.0) -> bytes:
    """One connection from ``source``: send ``data`` (then wait ``pause``), read until closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        if pause:
            time.sleep(pause)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        return answer


def get(port: int, source: str, headers: dict[str, str] | None = None, path: str = "/", proxy: bytes = b"") -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    request = REQUEST.replace(b"GET / ", b"GET " + path.encode() + b" ") + lines + b"\r\n"
    return exchange(port, source, proxy + request)


def body(answer: bytes) -> str:
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    if b"transfer-encoding: chunked" in head.lower():  # h11 streams the metrics app's answer
        text, data = b"", rest
        while data:
            size, _, data = data.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            text, data = text + data[:n], data[n + 2 :]
        return text.decode()
    return rest.decode()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toa_emulator.build(tmp_path_factory.mktemp("toa-emulator"))


TOA_RULES = {
    "127.0.0.5": "nat64:[2001:db8::5]:40000",  # a NAT64 client behind a toa_peers load balancer
    "127.0.0.6": "none",  # a toa_peers load balancer's own health check
    "127.0.0.7": "errno:5",  # EIO: a lookup that fails
    "127.0.0.10": "nat64:[2001:db8::10]:40000",  # an option from the trusted proxy, not a toa_peers peer
}


@NEEDS_CALL_SITES
def test_one_scrape_after_a_scripted_mix_under_uvicorn(tmp_path: Path, emulator: Path) -> None:
    env = {
        **toa_emulator.env(TOA_RULES, tmp_path / "lookups.log", library=emulator),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SNIPPETS)]),
        "REALIP_TRUSTED_PROXIES": "127.0.0.10",
        "REALIP_TOA_PEERS": "127.0.0.5,127.0.0.6,127.0.0.7",
        "REALIP_PROXY_PROTOCOL": "on",
        "REALIP_PROXY_PROTOCOL_PEERS": "127.0.0.8",
        "REALIP_PROXY_PROTOCOL_OTHERS": "serve",
        "REALIP_PROXY_PROTOCOL_TIMEOUT": "1",
    }
    argv = uvicorn_argv("metrics_fastapi:app", realip="H11Protocol")
    # No readiness request (it would be counted, and a slow start can make it two): the log says when.
    with serve("uvicorn-metrics", argv, tmp_path, family="v4", env=env, cwd=SNIPPETS, ready=False,
               ready_log="Application startup complete") as server:  # fmt: skip
        port = server.port
        forged = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}
        for _ in range(3):
            assert b"127.0.0.2" in get(port, "127.0.0.2", forged)  # peer; both headers stripped
        for _ in range(2):
            assert b"2001:db8::5" in get(port, "127.0.0.5")  # toa: found
        assert b"127.0.0.6" in get(port, "127.0.0.6")  # toa: none; peer
        assert b"127.0.0.7" in get(port, "127.0.0.7")  # toa: error; peer
        for _ in range(2):  # toa: found-untrusted-peer; the proxy's header is read
            assert b"203.0.113.7" in get(port, "127.0.0.10", {"X-Forwarded-For": "203.0.113.7"})
        get(port, "127.0.0.10", {"X-Forwarded-For": "203.0.113.7, garbage"})  # not believed: peer
        proxy_line = b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n"
        assert b"198.51.100.1" in get(port, "127.0.0.8", proxy=proxy_line)  # toa: none; accepted
        assert exchange(port, "127.0.0.8", b"PROXY TCP4 999.1.1.1 127.0.0.1 1 80\r\n" + REQUEST + b"\r\n") == b""
        assert exchange(port, "127.0.0.8", b"PROXY TCP4 198.51.100.1 ", pause=1.5) == b""  # timeout
        found = counts(body(get(port, "127.0.0.3", path="/metrics/")))  # the scrape: peer
    assert found == expected(
        answers={"peer": 3 + 1 + 1 + 1 + 1, "toa": 2, "x-forwarded-for": 2, "proxy-protocol": 1},
        stripped={"x-forwarded-for": 3, "x-real-ip": 3},
        not_believed={"invalid-entry": 1},
        toa={"found": 2, "none": 1 + 3, "error": 1, "found-untrusted-peer": 3},
        accepted=1,
        refused={"malformed": 1, "timeout": 1},
    )


@NEEDS_CALL_SITES
def test_gunicorn_workers_are_summed(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left by a previous run")  # removed by on_starting
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SNIPPETS)]),
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "REALIP_TRUSTED_PROXIES": "127.0.0.10",
        "REALIP_TOA": "off",
    }
    extra = ["--workers", "2", "--config", str(SNIPPETS / "metrics_gunicorn_conf.py")]
    argv = gunicorn_argv("metrics_flask:app", worker="gthread", extra=extra)
    with serve("gunicorn-metrics", argv, tmp_path, env=env, cwd=SNIPPETS, ready=False,
               ready_log="Booting worker") as server:  # fmt: skip
        port = server.port
        deadline = time.monotonic() + 30
        while len(list(directory.glob("counter_*.db"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # each worker writes its file when it enables the counters
        assert len(list(directory.glob("counter_*.db"))) == 2
        for _ in range(6):
            assert b"127.0.0.2" in get(port, "127.0.0.2", {"X-Forwarded-For": "6.6.6.6"})
        for _ in range(4):
            assert b"203.0.113.7" in get(port, "127.0.0.10", {"X-Forwarded-For": "203.0.113.7"})
        for _ in range(2):
            get(port, "127.0.0.10", {"X-Forwarded-For": "203.0.113.7, garbage"})
        found = counts(body(get(port, "127.0.0.3", path="/metrics")))
    assert found == expected(
        answers={"mapped": 6 + 2 + 1, "x-forwarded-for": 4},
        stripped={"x-forwarded-for": 6},
        not_believed={"invalid-entry": 2},
    )


@NEEDS_CALL_SITES
def test_a_peer_that_may_not_send_a_proxy_header_is_counted(tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SNIPPETS)]),
        "REALIP_PROXY_PROTOCOL": "on",
        "REALIP_PROXY_PROTOCOL_PEERS": "127.0.0.8",
        "REALIP_TOA": "off",
    }
    argv = uvicorn_argv("metrics_fastapi:app", realip="H11Protocol")
    ready = "Application startup complete"
    with serve("uvicorn-metrics-pp", argv, tmp_path, family="v4", env=env, cwd=SNIPPETS, ready=False,
               ready_log=ready) as server:  # fmt: skip
        assert get(server.port, "127.0.0.2") == b""  # closed
        proxy_line = b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\n"
        found = counts(body(get(server.port, "127.0.0.8", path="/metrics/", proxy=proxy_line)))
    assert found == expected(answers={"proxy-protocol": 1}, accepted=1, refused={"peer-not-allowed": 1})
