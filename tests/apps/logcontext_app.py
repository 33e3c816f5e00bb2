"""Apps that log while they handle a request, for tests/test_logcontext.py.

Each request (``?id=N``) writes several records to the file named by
``LOGCONTEXT_LOG``, around sleeps, so that concurrent requests interleave:
from the event loop and a worker thread (ASGI, Starlette), from the server's
threads (WSGI, gunicorn gthread). The format puts realip's log context
(``%(client)s``, ``%(peer)s``, ``%(client_source)s``) on each line.

* ``asgi_app`` / ``wsgi_app``: realip's middlewares, which bind the context.
* ``asgi_app_own_bind`` / ``wsgi_app_own_bind``: the same, with a test-only
  middleware that binds it (``realip.logcontext.bind`` / ``unbind``) inside
  realip's, for middlewares that do not (yet) bind it themselves.

Trusted proxies come from ``REALIP_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import realip.logcontext
from realip import RealIPMiddleware, RealIPWSGIMiddleware

FORMAT = "%(message)s client=%(client)s peer=%(peer)s source=%(client_source)s"

log = logging.getLogger("logcontext_app")
log.setLevel(logging.INFO)
log.propagate = False
_handler = logging.FileHandler(os.environ["LOGCONTEXT_LOG"])
_handler.setFormatter(logging.Formatter(FORMAT))
log.addHandler(_handler)
realip.logcontext.install(log)  # the one line of set-up
log.info("id=start step=import")  # no request: "-"

PAUSE = 0.02


async def async_route(request: Request) -> PlainTextResponse:
    rid = request.query_params["id"]
    log.info("id=%s step=1", rid)
    await asyncio.sleep(PAUSE)
    log.info("id=%s step=2", rid)
    await asyncio.to_thread(log.info, "id=%s step=3-thread", rid)  # the context goes along
    return PlainTextResponse(rid)


def sync_route(request: Request) -> PlainTextResponse:  # run in Starlette's thread pool
    rid = request.query_params["id"]
    log.info("id=%s step=1", rid)
    time.sleep(PAUSE)
    log.info("id=%s step=2", rid)
    return PlainTextResponse(rid)


starlette_app = Starlette(routes=[Route("/async", async_route), Route("/sync", sync_route)])


class BindASGI:
    """Test-only: binds what realip decided around the app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        resolution = scope.get("extensions", {}).get("realip")
        if resolution is None:
            await self.app(scope, receive, send)
            return
        token = realip.logcontext.bind(resolution)
        try:
            await self.app(scope, receive, send)
        finally:
            realip.logcontext.unbind(token)


asgi_app = RealIPMiddleware(starlette_app)
asgi_app_own_bind = RealIPMiddleware(BindASGI(starlette_app))


def _wsgi(environ: dict, start_response: Any) -> list[bytes]:
    rid = environ["QUERY_STRING"].partition("id=")[2]
    if not rid:  # the servers' readiness probes
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ready"]
    log.info("id=%s step=1", rid)
    time.sleep(PAUSE)
    log.info("id=%s step=2", rid)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [rid.encode()]


def _bind_wsgi(app: Any) -> Any:
    def bound(environ: dict, start_response: Any) -> Any:
        token = realip.logcontext.bind(environ["realip"])
        try:
            return app(environ, start_response)
        finally:
            realip.logcontext.unbind(token)

    return bound


wsgi_app = RealIPWSGIMiddleware(_wsgi)
wsgi_app_own_bind = RealIPWSGIMiddleware(_bind_wsgi(_wsgi))
