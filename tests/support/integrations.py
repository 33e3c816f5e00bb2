"""The servers realip integrates with beyond uvicorn, started as the docs say.

Each entry is the command a user runs (``python -m realip.hypercorn``,
``python -m realip.daphne``, ``gunicorn -k realip.gunicorn.ASGIWorker``) on an
inherited listening socket (``{fd}``), or, where the server cannot adopt an
IPv6 one (daphne's ``--fd`` takes AF_INET only), on ``{port}``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .servers import gunicorn_argv

PYTHON = sys.executable
APP = "tests.apps.echo:asgi_app"


@dataclass(frozen=True)
class Integration:
    name: str
    #: argv on an inherited socket ``{fd}`` (or ``{port}``), given the app and extra options
    base: tuple[str, ...]
    #: a line the server logs once it listens (when a plain GET cannot tell: PROXY protocol listeners)
    ready_log: str
    #: how a dual-stack ``[::]`` listener is handed over, if not as ``{fd}``
    dual_stack: tuple[str, ...] | None = None
    #: options that turn on cleartext HTTP/2 with prior knowledge (None: the server has none)
    h2c: tuple[str, ...] | None = None
    #: options for TLS (with ALPN h2), ``{cert}`` and ``{key}`` filled in (None: not run with TLS here)
    tls: tuple[str, ...] | None = None
    #: the echo app, as this server needs it
    app: str = APP

    def argv(self, *extra: str, dual_stack: bool = False) -> list[str]:
        base = self.dual_stack if dual_stack and self.dual_stack is not None else self.base
        return [a.replace("{app}", self.app) for a in base] + list(extra)


def _gunicorn(worker: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    return tuple(gunicorn_argv("{app}", worker=worker, extra=extra))


def _hypercorn(*extra: str) -> tuple[str, ...]:
    return (
        PYTHON, "-m", "realip.hypercorn", "{app}", "--bind", "fd://{fd}",
        "--access-logfile", "-", "--error-logfile", "-", *extra,
    )  # fmt: skip


INTEGRATIONS = {
    "gunicorn-asgi": Integration(
        "gunicorn-asgi",
        _gunicorn("realip.gunicorn.ASGIWorker"),
        "ASGI server listening",
        h2c=("--http-protocols", "h2,h1", "--http2-cleartext", "both", "--forwarded-allow-ips", "127.0.0.5"),
        tls=("--certfile", "{cert}", "--keyfile", "{key}", "--http-protocols", "h2,h1"),
    ),
    "hypercorn-asyncio": Integration(
        "hypercorn-asyncio",
        _hypercorn(),
        "Running on",
        h2c=(),
        tls=("--certfile", "{cert}", "--keyfile", "{key}"),
    ),
    "hypercorn-trio": Integration(
        "hypercorn-trio",
        _hypercorn("--worker-class", "trio"),
        "Running on",
        h2c=(),
        tls=("--certfile", "{cert}", "--keyfile", "{key}"),
    ),
    "daphne": Integration(
        "daphne",
        (PYTHON, "-m", "realip.daphne", "{app}", "--fd", "{fd}"),
        "Listening on TCP address",
        dual_stack=(PYTHON, "-m", "realip.daphne", "{app}", "-b", "::", "-p", "{port}"),
        app="tests.support.echo_app:asgi_app",  # daphne's WebSocket scopes have no "scheme"
    ),
}
