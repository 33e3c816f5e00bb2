"""What realip remembers per peer host, and the shortcuts around the decision, give the
answers a middleware with nothing remembered gives.

realip keeps what it decided about a peer per host (``realip.memory``): the
current connection's answer from the transport, and the last header text with
its answer. Another connection from the same host reuses that answer for the
same text, with its own peer; threads serving several connections from one
proxy share the entry. The tests here hold every such shortcut to a fresh
middleware's answer, including under threads, and check the two shortcuts
outside the middleware: realip's uvicorn protocols run the middleware's
decision in the connection's own call, and the log context is bound only in a
process that reads it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realip import RealIPMiddleware, RealIPWSGIMiddleware
from realip.result import Source, make_resolution

ROOT = Path(__file__).resolve().parents[1]
TRUSTED = "10.0.0.0/8"
VALUES = ["203.0.113.5, 10.0.0.1", "198.51.100.7", "", "junk, 10.0.0.1", "10.0.0.9, 10.0.0.1", "2001:db8::7"]


async def _nothing(*args: Any) -> Any:
    return {"type": "http.request"}


def _asgi(app: RealIPMiddleware, client: Any, value: str | None) -> dict[str, Any]:
    """The scope the application behind ``app`` gets for one request."""
    seen: list[dict[str, Any]] = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope)

    headers = [(b"host", b"backend")]
    if value is not None:
        headers.append((b"x-forwarded-for", value.encode()))
    app.app = inner
    asyncio.run(app({"type": "http", "scheme": "http", "client": client, "headers": headers}, _nothing, _nothing))
    return seen[0]


def _wsgi(app: RealIPWSGIMiddleware, addr: str, port: str, value: str | None) -> dict[str, Any]:
    environ = {"REMOTE_ADDR": addr, "REMOTE_PORT": port, "wsgi.url_scheme": "http", "HTTP_HOST": "backend"}
    if value is not None:
        environ["HTTP_X_FORWARDED_FOR"] = value
    app.app = lambda environ, start_response: [b""]
    app(environ, lambda *a: None)
    return environ


REQUESTS = st.lists(
    st.tuples(
        st.sampled_from(["10.0.0.2", "::ffff:10.0.0.2", "192.0.2.9", "::ffff:192.0.2.9"]),
        st.sampled_from([4000, 4001, 4002, 0]),
        st.sampled_from([*VALUES, None]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(REQUESTS)
def test_any_sequence_of_connections_gets_what_a_fresh_middleware_answers(requests: list[Any]) -> None:
    """Hosts, ports (new connections, the same connection again) and header texts in any order."""
    asgi = RealIPMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    wsgi = RealIPWSGIMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    for host, port, value in requests:
        fresh = _asgi(RealIPMiddleware(None, environ={}, trusted_proxies=TRUSTED), (host, port), value)
        assert _asgi(asgi, (host, port), value) == fresh
        fresh_environ = _wsgi(RealIPWSGIMiddleware(None, environ={}, trusted_proxies=TRUSTED), host, str(port), value)
        assert _wsgi(wsgi, host, str(port), value) == fresh_environ


def test_threads_serving_connections_from_one_proxy_each_get_their_own_answer() -> None:
    """gthread: one proxy host, 8 connections at once, relaying the same clients; the entry
    the host shares must never hand one connection another's peer."""
    wsgi = RealIPWSGIMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    wsgi.app = lambda environ, start_response: [b""]
    wrong: list[str] = []
    start = threading.Barrier(8)

    def connection(n: int) -> None:
        start.wait()
        for i in range(3000):
            client = "203.0.113.5" if (i + n) % 3 else "198.51.100.7"  # texts another connection just sent
            environ = {"REMOTE_ADDR": "10.0.0.2", "REMOTE_PORT": str(5000 + n), "HTTP_X_FORWARDED_FOR": client}
            wsgi(environ, lambda *a: None)
            answer = environ["realip"]
            if answer.client != (client, 0) or answer.peer != ("10.0.0.2", 5000 + n):
                wrong.append(f"{n}: {answer}")

    threads = [threading.Thread(target=connection, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []


def test_asgi_connections_from_one_proxy_interleaved_each_get_their_own_peer() -> None:
    asgi = RealIPMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    clients = [("10.0.0.2", 5000 + n) for n in range(4)]  # uvicorn: the same tuple for a connection's requests
    for i in range(40):
        client = clients[i % 4]
        scope = _asgi(asgi, client, "203.0.113.5, 10.0.0.1" if i % 5 else "198.51.100.7")
        answer = scope["extensions"]["realip"]
        assert answer.peer == client and answer.hops[-1] == "10.0.0.2"


def test_the_host_table_holds_hosts_not_connections() -> None:
    """A proxy opening a connection per request (gunicorn sync) adds nothing per connection."""
    asgi = RealIPMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    for port in range(1024, 1024 + 3000):
        _asgi(asgi, ("10.0.0.2", port), "203.0.113.5")
        _asgi(asgi, ("::ffff:192.0.2.9", port), None)
    assert set(asgi.memory.peers) == {"10.0.0.2", "::ffff:192.0.2.9"}


# ------------------------------------------------------------------------------ the uvicorn fold


def test_the_uvicorn_protocol_calls_the_app_behind_the_middleware_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    """RealIPMiddleware as the server's app: the connection's call decides and returns the
    inner app's coroutine (no middleware coroutine), with the answer the middleware gives."""
    pytest.importorskip("uvicorn")
    from realip._context import BINDING
    from realip.uvicorn import ConnectionApp

    monkeypatch.setattr(BINDING, "on", False)  # as in a process that never imported realip.logcontext

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        scope["seen"] = True

    peer = ("10.0.0.2", 5000)
    answer = make_resolution(peer, peer, Source.PEER)
    for value in ("203.0.113.5, 10.0.0.1", "junk", None):
        middleware = RealIPMiddleware(inner, environ={}, trusted_proxies=TRUSTED)
        call = ConnectionApp(middleware, answer)
        headers = [(b"x-forwarded-for", value.encode())] if value is not None else []
        scope: dict[str, Any] = {"type": "http", "client": peer, "headers": headers}
        coroutine = call(scope, _nothing, _nothing)
        assert coroutine.cr_code is inner.__code__  # type: ignore[attr-defined]
        asyncio.run(coroutine)  # type: ignore[arg-type]
        extensions = {"realip.connection": answer}
        through = {"type": "http", "client": peer, "headers": list(headers), "extensions": extensions}
        asyncio.run(RealIPMiddleware(inner, environ={}, trusted_proxies=TRUSTED)(through, _nothing, _nothing))
        assert scope == through


def test_the_uvicorn_fold_rejects_as_the_middleware_does_and_leaves_the_rest_to_it() -> None:
    pytest.importorskip("uvicorn")
    from realip.uvicorn import ConnectionApp

    ran: list[str] = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        ran.append(scope["type"])

    peer = ("10.0.0.2", 5000)
    answer = make_resolution(peer, peer, Source.PEER)
    middleware = RealIPMiddleware(inner, environ={}, trusted_proxies=TRUSTED, on_failure="reject")
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    call = ConnectionApp(middleware, answer)
    asyncio.run(call({"type": "http", "client": peer, "headers": [(b"x-forwarded-for", b"junk")]}, _nothing, send))
    assert ran == [] and sent[0]["status"] == 400
    asyncio.run(call({"type": "lifespan"}, _nothing, send))  # not a request: the middleware passes it on
    assert ran == ["lifespan"]


def test_the_uvicorn_fold_leaves_requests_to_the_middleware_while_the_log_context_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Binding the log context needs a coroutine around the app: the middleware's own."""
    pytest.importorskip("uvicorn")
    from realip._context import BINDING, current
    from realip.uvicorn import ConnectionApp

    monkeypatch.setattr(BINDING, "on", True)
    seen: list[Any] = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        seen.append(current.get())

    peer = ("10.0.0.2", 5000)
    call = ConnectionApp(
        RealIPMiddleware(inner, environ={}, trusted_proxies=TRUSTED), make_resolution(peer, peer, "peer")
    )
    coroutine = call(
        {"type": "http", "client": peer, "headers": [(b"x-forwarded-for", b"203.0.113.5")]}, _nothing, _nothing
    )
    assert coroutine.cr_code is not inner.__code__  # type: ignore[attr-defined]
    asyncio.run(coroutine)  # type: ignore[arg-type]
    assert seen[0] is not None and seen[0].client == ("203.0.113.5", 0)


# ------------------------------------------------------------------------------ the log context switch

_WITHOUT = """
import asyncio
from realip import RealIPMiddleware, RealIPWSGIMiddleware
from realip._context import BINDING, current
seen = []
async def asgi(scope, receive, send):
    seen.append(current.get())
def wsgi(environ, start_response):
    seen.append(current.get())
    return []
scope = {"type": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "headers": []}
asyncio.run(RealIPMiddleware(asgi, toa=False)(scope, None, None))
RealIPWSGIMiddleware(wsgi, toa=False)({"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "1"}, None)
print(BINDING.on, seen)
import realip.logcontext
asyncio.run(RealIPMiddleware(asgi, toa=False)(dict(scope), None, None))
RealIPWSGIMiddleware(wsgi, toa=False)({"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "1"}, None)
print(BINDING.on, [found.source if found else None for found in seen[2:]])
"""


def test_the_log_context_is_bound_once_realip_logcontext_is_imported() -> None:
    """A process that never reads the context does not set it per request; importing
    realip.logcontext (which every way of reading it does) turns it on."""
    done = subprocess.run([sys.executable, "-c", _WITHOUT], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False [None, None]", "True ['peer', 'peer']"]


# ------------------------------------------------------------------------------ what a host's entry must not carry over

# (A missing port, ("10.0.0.2", None), is not among them: it is unknown, 0, as uWSGI reports it.)
MALFORMED_CLIENTS = [("10.0.0.2", 4001, "x"), ("10.0.0.2",), ["10.0.0.2", 4002, 5], ("10.0.0.2", "x"),
                     ("10.0.0.2", 70000), ("10.0.0.2", -1)]  # fmt: skip


@pytest.mark.parametrize("client", MALFORMED_CLIENTS, ids=repr)
def test_a_malformed_peer_of_a_known_proxy_host_is_not_that_proxy(client: Any) -> None:
    """Once 10.0.0.2 is known as a trusted proxy, a server's odd report with that host
    (not a pair, or a port that is not one) is answered as a fresh middleware answers
    it: not an address, its header never believed."""
    warm = RealIPMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    _asgi(warm, ("10.0.0.2", 4000), "203.0.113.5")
    scope = _asgi(warm, client, "6.6.6.6")
    assert scope == _asgi(RealIPMiddleware(None, environ={}, trusted_proxies=TRUSTED), client, "6.6.6.6")
    assert scope["extensions"]["realip"].client is None and "6.6.6.6" not in repr(scope)


@pytest.mark.parametrize("port", ["x", "70000", "-1", "4000 4001"])
def test_a_wsgi_port_that_is_not_one_makes_no_address_even_from_a_known_proxy(port: str) -> None:
    warm = RealIPWSGIMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    _wsgi(warm, "10.0.0.2", "4000", "203.0.113.5")
    environ = _wsgi(warm, "10.0.0.2", port, "6.6.6.6")
    assert environ == _wsgi(
        RealIPWSGIMiddleware(None, environ={}, trusted_proxies=TRUSTED), "10.0.0.2", port, "6.6.6.6"
    )
    assert environ["realip"].client is None and "HTTP_X_FORWARDED_FOR" not in environ


def test_a_connection_reusing_a_load_balancers_address_and_port_is_still_asked() -> None:
    """A TOA lookup that found no module is retried a minute later. A connection seen
    in that minute must not pass its "not asked" on to a later connection from the
    same address and port (load balancers reuse source ports): that one is asked, and
    the client's own X-Forwarded-For is not believed from a TOA load balancer."""
    import time

    from realip.core import peer_resolution

    wsgi = RealIPWSGIMiddleware(
        lambda e, s: [b""], environ={}, trusted_proxies="100.125.0.0/16", toa_peers="100.125.0.0/16"
    )
    resolver = wsgi._apply.connection.resolver

    class Connection:  # stands in for the accepted socket; the kernel module's answer is what it carries
        def __init__(self, toa_client: str | None) -> None:
            self.toa_client = toa_client

    def resolve(sock: Any, peer: Any, unix: bool = False) -> Any:
        base = peer_resolution(tuple(peer))
        if not resolver.asks_toa or sock.toa_client is None:
            return base
        return make_resolution((sock.toa_client, 1234), base.peer, Source.TOA, (base.client[0],))

    resolver.resolve = resolve  # type: ignore[method-assign]

    def request(sock: Connection) -> tuple[str, str]:
        environ = {"REMOTE_ADDR": "100.125.1.1", "REMOTE_PORT": "40000", "gunicorn.socket": sock,
                   "HTTP_X_FORWARDED_FOR": "6.6.6.6"}  # fmt: skip
        wsgi(environ, lambda *a: None)
        return environ["REMOTE_ADDR"], environ["realip"].source

    resolver._module_absent_until = time.monotonic() + 60  # "no module": not asked for a minute
    request(Connection(None))
    resolver._module_absent_until = time.monotonic() - 1  # the minute is over; the module is there
    assert request(Connection("198.51.100.1")) == ("198.51.100.1", "toa")


def test_an_entry_padded_with_blanks_is_walked_but_not_kept() -> None:
    """The walk remembers entries as written, short ones only: kilobytes of spaces around
    an address are decided every time and never become a key."""
    asgi = RealIPMiddleware(None, environ={}, trusted_proxies=TRUSTED)
    padded = " " * 4000 + "10.0.0.7"
    for client in ("203.0.113.5", "203.0.113.6"):
        scope = _asgi(asgi, ("10.0.0.2", 4000), f"{client},{padded}, 10.0.0.1")
        assert scope["extensions"]["realip"].client == (client, 0)
        assert scope["extensions"]["realip"].hops == ("10.0.0.7", "10.0.0.1", "10.0.0.2")
    assert max(len(key) for key in asgi.memory.entries) <= 32
