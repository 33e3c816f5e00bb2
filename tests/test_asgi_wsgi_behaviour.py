"""Scope handling, lifespan, concurrency and keep-alive on real servers."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from realip import RealIPMiddleware, RealIPWSGIMiddleware, Resolution

from .support.clients import client, local_port
from .support.servers import EXAMPLES, gunicorn_argv, serve, uvicorn_argv


def test_lifespan_reaches_the_app_through_the_middleware(tmp_path: Path) -> None:
    trace = tmp_path / "lifespan.trace"
    argv = uvicorn_argv("tests.apps.lifespan_app:app", extra=["--lifespan", "on"])
    with serve("uvicorn-lifespan", argv, tmp_path, env={"LIFESPAN_TRACE": str(trace)}) as srv:
        with client("127.0.0.2") as c:
            body = c.get(srv.url()).json()
        assert body == {"client": ["127.0.0.2", body["client"][1]], "started": True}
        assert trace.read_text() == "startup\n"
    assert trace.read_text() == "startup\nshutdown\n"


async def _run(app: object, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "lifespan.startup"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[operator]
    return sent


@pytest.mark.parametrize("scope_type", ["lifespan", "something-new"])
def test_other_scope_types_pass_through_untouched(scope_type: str) -> None:
    import asyncio

    seen: list[dict] = []

    async def inner(scope: dict, receive: object, send: object) -> None:
        seen.append(dict(scope))

    scope = {"type": scope_type, "client": ("::ffff:10.0.0.1", 5), "asgi": {"version": "3.0"}}
    asyncio.run(_run(RealIPMiddleware(inner), scope))
    assert seen == [{"type": scope_type, "client": ("::ffff:10.0.0.1", 5), "asgi": {"version": "3.0"}}]


def test_result_is_published_next_to_existing_extensions() -> None:
    import asyncio

    seen: list[dict] = []

    async def inner(scope: dict, receive: object, send: object) -> None:
        seen.append(scope)

    scope = {"type": "http", "client": ["::ffff:10.0.0.1", 5], "extensions": {"tls": {}}}
    asyncio.run(_run(RealIPMiddleware(inner), scope))
    result = seen[0]["extensions"]["realip"]
    assert isinstance(result, Resolution)
    assert seen[0]["extensions"]["tls"] == {}
    assert seen[0]["client"] == ("10.0.0.1", 5)
    assert (result.peer, result.source, result.ip, result.port) == (("::ffff:10.0.0.1", 5), "mapped", "10.0.0.1", 5)


def test_unix_socket_peer_is_left_alone() -> None:
    import asyncio

    seen: list[dict] = []

    async def inner(scope: dict, receive: object, send: object) -> None:
        seen.append(scope)

    asyncio.run(_run(RealIPMiddleware(inner), {"type": "http", "client": None}))
    assert seen[0]["client"] is None
    assert seen[0]["extensions"]["realip"].client is None


def test_wsgi_keeps_the_original_peer_and_leaves_non_addresses_alone() -> None:
    environs: list[dict] = []

    def app(environ: dict, start_response: object) -> list[bytes]:
        environs.append(environ)
        return [b""]

    middleware = RealIPWSGIMiddleware(app)
    middleware({"REMOTE_ADDR": "::ffff:192.0.2.7", "REMOTE_PORT": "4242"}, None)
    middleware({"REMOTE_ADDR": "", "REMOTE_PORT": ""}, None)  # e.g. gunicorn on a Unix socket
    first, second = environs
    assert (first["REMOTE_ADDR"], first["REMOTE_PORT"]) == ("192.0.2.7", "4242")
    assert first["realip"].peer == ("::ffff:192.0.2.7", 4242)
    assert (second["REMOTE_ADDR"], second["REMOTE_PORT"], second["realip"].client) == ("", "", None)


SOURCES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "::1"]
CONNECTIONS_PER_SOURCE = 4
REQUESTS_PER_CONNECTION = 25


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("uvicorn-httptools", uvicorn_argv("fastapi_app:app", http="httptools")),
        ("gunicorn-gthread", gunicorn_argv("flask_app:app", worker="gthread", extra=["--threads", "8"])),
    ],
)
def test_concurrent_keepalive_clients_each_see_their_own_address(tmp_path: Path, name: str, argv: list[str]) -> None:
    """20 keep-alive connections from 5 addresses at once, 25 requests each."""
    mistakes: list[str] = []
    answered: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(source: str, url: str) -> None:
        with client(source) as c:
            for _ in range(REQUESTS_PER_CONNECTION):
                with c.stream("GET", url) as response:
                    port = local_port(response)
                    body = response.read()
                seen = response.json()["client"] if body else None
                with lock:
                    answered[source] += 1
                    if seen != [source, port]:
                        mistakes.append(f"{source}:{port} saw {seen}")

    with serve(name, argv, tmp_path, cwd=EXAMPLES) as srv:
        threads = [
            threading.Thread(target=worker, args=(source, srv.url("::1" if ":" in source else "127.0.0.1")))
            for source in SOURCES
            for _ in range(CONNECTIONS_PER_SOURCE)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not mistakes, mistakes[:5]
    assert answered == {s: CONNECTIONS_PER_SOURCE * REQUESTS_PER_CONNECTION for s in SOURCES}
