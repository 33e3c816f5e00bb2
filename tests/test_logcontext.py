"""realip.logcontext: the client of the request being handled, in every log record.

In-process: threads, asyncio tasks and thread pools each see their own request,
nothing leaks out of one; the set-ups the docs show (``install()``, a
``dictConfig`` dictionary, structlog) run as written. On real servers: uvicorn
and gunicorn (gthread) serve concurrent requests from eight loopback addresses
and ``::1``, half of them through a real nginx, and every record the app wrote
names the client of its own request.

The servers run each app twice: with a test-only middleware that binds the
context (``*_own_bind``), and as realip's middlewares alone, which bind it
themselves once they call ``realip.logcontext.bind`` (``NEEDS_CALL_SITES``:
skipped until they do, except under ``CI=true``, where they must pass).
"""

from __future__ import annotations

import asyncio
import io
import logging
import logging.handlers
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import realip.logcontext
from realip import RealIPMiddleware, RealIPWSGIMiddleware, Resolution
from realip.logcontext import ClientFilter, bind, current, unbind

from .support.clients import client
from .support.programs import IN_CI
from .support.proxies import nginx
from .support.servers import Server, gunicorn_argv, serve, uvicorn_argv

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "docs" / "snippets"


def resolution(client_ip: str, source: str = "x-forwarded-for", peer: str = "10.0.0.1") -> Resolution:
    return Resolution(client=(client_ip, 0), peer=(peer, 5555), source=source)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(message)s|%(client)s|%(peer)s|%(client_source)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, ListHandler]]:
    """A private logger with one handler carrying realip's filter."""
    log = logging.getLogger(f"test_logcontext.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = ListHandler()
    log.addHandler(handler)
    realip.logcontext.install(log)
    yield log, handler
    log.removeHandler(handler)


# ------------------------------------------------------------------------------ in process


def test_outside_a_request_every_field_is_a_dash(logger: tuple[logging.Logger, ListHandler]) -> None:
    log, handler = logger
    assert current.get() is None
    log.info("no request")
    assert handler.lines == ["no request|-|-|-"]


def test_bind_and_unbind_nest_and_restore(logger: tuple[logging.Logger, ListHandler]) -> None:
    log, handler = logger
    outer = bind(resolution("203.0.113.7"))
    log.info("outer")
    inner = bind(Resolution(client=None, peer=None, source="unix"))
    log.info("inner")
    unbind(inner)
    log.info("outer again")
    unbind(outer)
    log.info("after")
    assert handler.lines == [
        "outer|203.0.113.7|10.0.0.1|x-forwarded-for",
        "inner|-|-|unix",
        "outer again|203.0.113.7|10.0.0.1|x-forwarded-for",
        "after|-|-|-",
    ]


def test_threads_see_only_their_own_request(logger: tuple[logging.Logger, ListHandler]) -> None:
    log, handler = logger
    count, rounds = 8, 25
    barrier = threading.Barrier(count, timeout=30)

    def work(n: int) -> None:
        token = bind(resolution(f"198.51.100.{n}", peer=f"10.0.0.{n}"))
        try:
            barrier.wait()  # every thread bound before any logs
            for i in range(rounds):
                log.info("thread=%d i=%d", n, i)
        finally:
            unbind(token)
        log.info("thread=%d after", n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(handler.lines) == count * (rounds + 1)
    for line in handler.lines:
        message, client_ip, peer, source = line.split("|")
        n = int(re.match(r"thread=(\d+)", message)[1])  # type: ignore[index]
        if message.endswith("after"):
            assert (client_ip, peer, source) == ("-", "-", "-"), line
        else:
            assert (client_ip, peer, source) == (f"198.51.100.{n}", f"10.0.0.{n}", "x-forwarded-for"), line


def test_asyncio_tasks_and_their_threads_see_only_their_own_request(
    logger: tuple[logging.Logger, ListHandler],
) -> None:
    log, handler = logger

    async def handle(n: int) -> None:
        token = bind(resolution(f"2001:db8::{n}", source="forwarded"))
        try:
            for i in range(5):
                log.info("task=%d i=%d", n, i)
                await asyncio.sleep(0.001 * ((n * 7 + i) % 4))
            await asyncio.to_thread(log.info, "task=%d thread", n)
        finally:
            unbind(token)

    async def main() -> None:
        await asyncio.gather(*(handle(n) for n in range(1, 21)))
        log.info("task=0 outside")

    asyncio.run(main())
    assert len(handler.lines) == 20 * 6 + 1
    for line in handler.lines:
        message, client_ip, _, source = line.split("|")
        n = int(re.match(r"task=(\d+)", message)[1])  # type: ignore[index]
        expected = ("-", "-") if n == 0 else (f"2001:db8::{n}", "forwarded")
        assert (client_ip, source) == expected, line


def test_attributes_given_with_extra_are_kept(logger: tuple[logging.Logger, ListHandler]) -> None:
    log, handler = logger
    token = bind(resolution("203.0.113.7"))
    try:
        log.info("mine", extra={"client": "someone"})
    finally:
        unbind(token)
    assert handler.lines == ["mine|someone|10.0.0.1|x-forwarded-for"]


def test_install_adds_one_filter_per_handler_and_needs_handlers() -> None:
    log = logging.getLogger("test_logcontext.install")
    with pytest.raises(ValueError, match="no handlers"):
        realip.logcontext.install(log)
    first, second = logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())
    log.addHandler(first)
    log.addHandler(second)
    try:
        found = realip.logcontext.install("test_logcontext.install")
        realip.logcontext.install(log)  # again: nothing more
        assert first.filters == [found] and second.filters == [found]
        assert isinstance(found, ClientFilter)
    finally:
        log.removeHandler(first)
        log.removeHandler(second)


def test_a_queue_handler_carries_the_request_to_the_listener_thread() -> None:
    """The filter goes on the QueueHandler: it runs in the thread that logs."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    target = ListHandler()
    listener = logging.handlers.QueueListener(records, target)
    queued = logging.handlers.QueueHandler(records)
    log = logging.getLogger("test_logcontext.queue")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(queued)
    realip.logcontext.install(log)
    listener.start()
    try:
        token = bind(resolution("203.0.113.9"))
        try:
            log.info("queued")
        finally:
            unbind(token)
    finally:
        listener.stop()
        log.removeHandler(queued)
    assert target.lines == ["queued|203.0.113.9|10.0.0.1|x-forwarded-for"]


def test_structlog_processor_adds_the_same_keys() -> None:
    event = realip.logcontext.structlog_processor(None, "info", {"event": "outside"})
    assert event == {"event": "outside", "client": "-", "peer": "-", "client_source": "-"}
    token = bind(resolution("203.0.113.7"))
    try:
        event = realip.logcontext.structlog_processor(None, "info", {"event": "inside", "client": "kept"})
    finally:
        unbind(token)
    assert event == {"event": "inside", "client": "kept", "peer": "10.0.0.1", "client_source": "x-forwarded-for"}


# ------------------------------------------------------------------------------ the snippets, as written

RUN_SNIPPET = """
import runpy, sys
from realip import Resolution
from realip.logcontext import bind, unbind
namespace = runpy.run_path(sys.argv[1], run_name="__main__")
log_line = namespace.get("log_line")
import logging
logging.getLogger("app").info("outside")
token = bind(Resolution(client=("2001:db8::7", 0), peer=("::ffff:10.0.0.1", 5555), source="x-forwarded-for"))
try:
    if sys.argv[2] == "structlog":
        import structlog
        structlog.get_logger().info("inside", user="alice")
    else:
        logging.getLogger("app").info("inside")
finally:
    unbind(token)
"""


def run_snippet(name: str, kind: str = "logging") -> str:
    done = subprocess.run(
        [sys.executable, "-c", RUN_SNIPPET, str(SNIPPETS / name), kind],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_install_snippet() -> None:
    out = run_snippet("logging_install.py").splitlines()
    assert out[0].endswith(" INFO - (- via -) app: outside"), out
    assert out[1].endswith(" INFO 2001:db8::7 (x-forwarded-for via ::ffff:10.0.0.1) app: inside"), out


def test_dictconfig_snippet() -> None:
    out = run_snippet("logging_dictconfig.py").splitlines()
    assert out == ["INFO - - - app: outside", "INFO 2001:db8::7 x-forwarded-for ::ffff:10.0.0.1 app: inside"]


def test_structlog_snippet() -> None:
    import json

    out = run_snippet("logging_structlog.py", "structlog").splitlines()
    events = [json.loads(line) for line in out if line.startswith("{")]
    assert events == [
        {
            "client": "2001:db8::7",
            "client_source": "x-forwarded-for",
            "event": "inside",
            "level": "info",
            "peer": "::ffff:10.0.0.1",
            "user": "alice",
        }
    ]


# ------------------------------------------------------------------------------ real servers


def _middlewares_bind() -> bool:
    """Whether realip's ASGI and WSGI middlewares bind the log context themselves."""
    seen: list[Resolution | None] = []

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current.get())

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        seen.append(current.get())
        return []

    scope = {"type": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "headers": []}
    asyncio.run(RealIPMiddleware(asgi, toa=False)(scope, None, None))  # type: ignore[arg-type]
    RealIPWSGIMiddleware(wsgi, toa=False)({"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "1"}, None)
    return all(found is not None for found in seen)


#: Tests that need realip's middlewares to call realip.logcontext.bind / unbind.
NEEDS_CALL_SITES = pytest.mark.skipif(
    not IN_CI and not _middlewares_bind(),
    reason="realip's middlewares do not bind realip.logcontext yet (issue #15 call sites)",
)

PROXY = "127.0.0.10"
DIRECT = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "::1")
PROXIED = ("127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9")
ROUNDS = 4

SERVERS = {
    "uvicorn": (uvicorn_argv, "tests.apps.logcontext_app:asgi_app", ("/async", "/sync")),
    "gunicorn-gthread": (
        lambda app: gunicorn_argv(app, worker="gthread"),
        "tests.apps.logcontext_app:wsgi_app",
        ("/",),
    ),
}
CASES = [
    pytest.param("uvicorn", "_own_bind", id="uvicorn-test-middleware-binds"),
    pytest.param("gunicorn-gthread", "_own_bind", id="gunicorn-gthread-test-middleware-binds"),
    pytest.param("uvicorn", "", id="uvicorn-realip-binds", marks=NEEDS_CALL_SITES),
    pytest.param("gunicorn-gthread", "", id="gunicorn-gthread-realip-binds", marks=NEEDS_CALL_SITES),
]

LINE = re.compile(r"id=(?P<id>\S+) step=(?P<step>\S+) client=(?P<client>\S+) peer=(?P<peer>\S+) source=(?P<source>\S+)")


def _fetch(port: int, source: str, routes: tuple[str, ...]) -> list[str]:
    """ROUNDS requests to each route from ``source`` (to ``port``); the ids sent."""
    host = "[::1]" if ":" in source else "127.0.0.1"
    sent = []
    with client(source) as c:
        for i in range(ROUNDS):
            for route in routes:
                rid = f"{source.replace(':', '_')}~{route.strip('/') or 'root'}~{i}"
                response = c.get(f"http://{host}:{port}{route}", params={"id": rid})
                assert response.status_code == 200, response.text
                assert response.text == rid
                sent.append(rid)
    return sent


@pytest.mark.parametrize(("server_name", "variant"), CASES)
def test_records_name_the_client_of_their_own_request(server_name: str, variant: str, tmp_path: Path) -> None:
    argv_of, app, routes = SERVERS[server_name]
    log_path = tmp_path / "app.log"
    env = {"LOGCONTEXT_LOG": str(log_path), "REALIP_TRUSTED_PROXIES": PROXY, "REALIP_TOA": "off"}
    with (
        serve(server_name, argv_of(app + variant), tmp_path, env=env) as server,
        nginx(tmp_path, "nginx-realip.conf", UPSTREAM=server.port, BIND=PROXY) as proxy_port,
    ):
        jobs = [(server.port, source) for source in DIRECT] + [(proxy_port, source) for source in PROXIED]
        with ThreadPoolExecutor(len(jobs)) as pool:
            sent = [rid for ids in pool.map(lambda job: _fetch(job[0], job[1], routes), jobs) for rid in ids]
        _check(server, log_path, sent, routes)


def _check(server: Server, log_path: Path, sent: list[str], routes: tuple[str, ...]) -> None:
    lines = log_path.read_text().splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match]
    start = [m for m in parsed if m and m["id"] == "start"]
    assert start and all((m["client"], m["peer"], m["source"]) == ("-", "-", "-") for m in start)
    steps: dict[str, list[str]] = {}
    for match in parsed:
        assert match is not None
        rid = match["id"]
        if rid == "start":
            continue
        source = rid.split("~")[0].replace("_", ":")
        if source in PROXIED:
            expected = (source, f"::ffff:{PROXY}", "x-forwarded-for")
        elif ":" in source:
            expected = (source, source, "peer")
        else:
            expected = (source, f"::ffff:{source}", "mapped")
        assert (match["client"], match["peer"], match["source"]) == expected, (match.group(0), server.log()[-2000:])
        steps.setdefault(rid, []).append(match["step"])
    assert sorted(steps) == sorted(sent)  # every request logged, none twice
    for rid, seen in steps.items():
        route = rid.split("~")[1]
        assert seen == (["1", "2", "3-thread"] if route == "async" else ["1", "2"]), (rid, seen)
