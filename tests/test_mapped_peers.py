"""Dual-stack listeners: every server hands the app the unwrapped client address.

Each server runs for real on a ``[::]`` socket with ``IPV6_V6ONLY`` off, so an
IPv4 client arrives as ``::ffff:127.0.0.x``; the app must see ``127.0.0.x``,
IPv6 clients ``::1``, each with its own port, and the access log must agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.clients import IPV4_CLIENTS, IPV6_CLIENT, target_for, websocket_whoami, whoami
from .support.servers import (
    EXAMPLES,
    Server,
    gunicorn_argv,
    hypercorn_argv,
    serve,
    uvicorn_argv,
    werkzeug_argv,
)

DJANGO = EXAMPLES / "django_project"

#: name -> (argv, working directory, access-log line pattern for client ip + port)
SERVERS = {
    "uvicorn-h11": (uvicorn_argv("fastapi_app:app", http="h11"), EXAMPLES, r"{ip}:{port} - "),
    "uvicorn-httptools": (uvicorn_argv("fastapi_app:app", http="httptools"), EXAMPLES, r"{ip}:{port} - "),
    "gunicorn-uvicorn-worker": (
        gunicorn_argv("fastapi_app:app", worker="uvicorn_worker.UvicornWorker"), EXAMPLES, r"{ip}:{port} - ",
    ),
    "hypercorn": (hypercorn_argv("fastapi_app:app"), EXAMPLES, r"{ip}:{port} - "),
    "gunicorn-sync": (gunicorn_argv("flask_app:app", worker="sync"), EXAMPLES, r"^{ip} - "),
    "gunicorn-gthread": (gunicorn_argv("flask_app:app", worker="gthread"), EXAMPLES, r"^{ip} - "),
    "werkzeug": (werkzeug_argv("flask_app:app"), EXAMPLES, r"{ip} - - \["),
    "django-gunicorn": (gunicorn_argv("project.wsgi", worker="gthread"), DJANGO, r"^{ip} - "),
    "django-asgi-uvicorn": (uvicorn_argv("project.asgi:application"), DJANGO, r"{ip}:{port} - "),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    argv, cwd, _ = SERVERS[request.param]
    with serve(request.param, argv, tmp_path_factory.mktemp(request.param), cwd=cwd) as running:
        running.extra["log_pattern"] = SERVERS[request.param][2]
        yield running


@pytest.mark.parametrize("source", [*IPV4_CLIENTS[:2], IPV6_CLIENT])
def test_app_sees_unwrapped_client_and_its_port(server: Server, source: str) -> None:
    body, port = whoami(server.url(target_for(source)), source)
    assert body["client"] == [source, port]
    expected_peer = source if ":" in source else f"::ffff:{source}"
    assert body["peer"] == [expected_peer, port]
    assert body["source"] == ("peer" if ":" in source else "mapped")


def test_access_log_shows_rewritten_address(server: Server) -> None:
    start = len(server.log())  # only this request's line counts: earlier tests logged 127.0.0.2 too
    body, port = whoami(server.url(), "127.0.0.2")
    assert body["client"] == ["127.0.0.2", port]
    pattern = server.extra["log_pattern"].format(ip=re.escape("127.0.0.2"), port=port)  # type: ignore[union-attr]
    text = server.wait_for_log("127.0.0.2", since=start)  # access logs are written after the response
    assert re.search(pattern, text, re.MULTILINE), text[-2000:]
    assert "::ffff:127.0.0.2" not in server.log()


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("source", ["127.0.0.3", IPV6_CLIENT])
def test_websocket_under_uvicorn_sees_unwrapped_client(tmp_path: Path, http: str, source: str) -> None:
    with serve(f"uvicorn-ws-{http}", uvicorn_argv("fastapi_app:app", http=http), tmp_path, cwd=EXAMPLES) as srv:
        host = target_for(source)
        netloc = f"[{host}]" if ":" in host else host
        message = websocket_whoami(f"ws://{netloc}:{srv.port}/ws", source)
    assert message["client"][0] == source
    assert message["source"] == ("peer" if ":" in source else "mapped")
