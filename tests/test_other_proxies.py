"""Behind Apache, squid and nginx's stream module, for real: the app sees the client.

Each proxy is Debian's package, run in the foreground with a configuration
from ``tests/proxies/`` (the files docs/proxies.md and docs/proxy-protocol.md
quote), its own files and ports on loopback. Clients come from ``127.0.0.2``,
``127.0.0.3`` and ``::1`` and forge every forwarding header they can; the app
(``tests/apps/echo.py``, configured from ``REALIP_*`` variables) must see
them, never what they wrote.

* Apache's mod_proxy cannot choose its source address: it connects from
  ``127.0.0.1``, the one address the app trusts behind it.
* squid (``tcp_outgoing_address``) and nginx (``proxy_bind``) connect from
  ``127.0.0.10``.

Also here, because the security model rests on them: what each WSGI server
does with the underscore spelling of a header (``X_Real_IP``), and gunicorn's
``--proxy-allow-from`` on a dual-stack socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .support.clients import client, local_port, target_for, websocket_whoami
from .support.proxies import apache, nginx, squid
from .support.servers import Server, gunicorn_argv, serve, uvicorn_argv, uwsgi_argv, waitress_argv, werkzeug_argv

APACHE_PEER = "127.0.0.1"  # where Apache's connections to the app come from
PROXY = "127.0.0.10"  # squid's tcp_outgoing_address, nginx's proxy_bind
SOURCES = ["127.0.0.2", "127.0.0.3", "::1"]

APPS = {
    "uvicorn": uvicorn_argv("tests.apps.echo:asgi_app"),
    "gunicorn": gunicorn_argv("tests.apps.echo:wsgi_app", worker="gthread"),
    "werkzeug": werkzeug_argv("tests.apps.echo:wsgi_app"),
    # binds 127.0.0.1 itself (an AF_INET socket): peers are plain IPv4, REMOTE_PORT is absent
    "uwsgi": uwsgi_argv("tests.apps.echo:wsgi_app"),
}

FORGERIES = [
    {},
    {"X-Forwarded-For": "6.6.6.6"},
    {"X-Forwarded-For": f"6.6.6.6, {PROXY}, {APACHE_PEER}"},  # claims to come through the trusted proxies
    {"X-Forwarded-For": "<script>alert(1)</script>"},
    {"X-Forwarded-For": "unknown, , 1.2.3.4:80"},
    {"X-Real-IP": "6.6.6.6"},
    {"Forwarded": "for=6.6.6.6"},
    {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.7", "Forwarded": "for=6.6.6.8"},
]


def forgery_id(headers: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in headers.items()) or "none"


def get(port: int, source: str, headers: dict[str, str] | None = None, path: str = "/") -> tuple[dict[str, Any], int]:
    """GET through ``port`` from ``source``: the app's JSON answer and the client's own port."""
    host = target_for(source)
    netloc = f"[{host}]" if ":" in host else host
    with client(source) as c, c.stream("GET", f"http://{netloc}:{port}{path}", headers=headers) as response:
        own_port = local_port(response)
        response.read()
    assert response.status_code == 200, response.text
    return response.json(), own_port


def start_app(name: str, tmp: Any, env: dict[str, str]) -> Iterator[Server]:
    with serve(name, APPS[name], tmp, env=env) as server:
        server.extra["tmp"] = tmp
        yield server


# ------------------------------------------------------------------------------ Apache


@pytest.fixture(
    scope="module",
    params=[(app, s) for app in APPS for s in ("x-forwarded-for", "x-real-ip")],
    ids=lambda p: "-".join(p),
)
def apache_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    name, strategy = request.param
    env = {"REALIP_TRUSTED_PROXIES": APACHE_PEER, "REALIP_STRATEGY": strategy}
    for server in start_app(name, tmp_path_factory.mktemp(f"apache-{name}-{strategy}"), env):
        server.extra["strategy"] = strategy
        yield server


@pytest.fixture(scope="module")
def apache_port(apache_app: Server) -> Iterator[int]:
    with apache(apache_app.extra["tmp"], "apache-realip.conf", UPSTREAM=apache_app.port) as port:  # type: ignore[arg-type]
        yield port


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("forged", FORGERIES, ids=forgery_id)
def test_client_behind_apache_is_seen_whatever_it_forges(
    apache_app: Server, apache_port: int, source: str, forged: dict[str, str]
) -> None:
    body, _ = get(apache_port, source, forged)
    assert body["client"][0] == source
    assert body["source"] == apache_app.extra["strategy"]
    assert body["hops"] == [APACHE_PEER]
    assert body["error"] is None
    if apache_app.name != "uwsgi":
        assert body["peer"][0] == f"::ffff:{APACHE_PEER}"  # a dual-stack socket; trusted "127.0.0.1" matches it


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
def test_apache_appends_to_x_forwarded_for_and_overwrites_x_real_ip(
    apache_app: Server, apache_port: int, source: str
) -> None:
    body, _ = get(apache_port, source, {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.7"})
    if apache_app.extra["strategy"] == "x-forwarded-for":
        assert body["headers"]["x-forwarded-for"] == f"6.6.6.6, {source}"
    else:
        assert body["headers"]["x-real-ip"] == source


UNDERSCORE_FORGERIES = [
    {"X_Forwarded_For": "6.6.6.6"},
    {"X-Forwarded-For": "1.1.1.1", "X_Forwarded_For": "6.6.6.6"},
    {"X-Forwarded-For": "1.1.1.1", "X-Forwarded_For": "6.6.6.6"},
    {"X_Real_IP": "6.6.6.6"},
    {"X-Real-IP": "1.1.1.1", "X_Real-IP": "6.6.6.6"},
]


@pytest.mark.parametrize("forged", UNDERSCORE_FORGERIES, ids=forgery_id)
def test_underscore_spellings_never_reach_the_app_through_apache(
    apache_app: Server, apache_port: int, forged: dict[str, str]
) -> None:
    """WSGI names ``X_Forwarded_For`` and ``X-Forwarded-For`` alike (HTTP_X_FORWARDED_FOR).

    Apache passes underscore spellings on; gunicorn, Werkzeug (since 2.3) and
    waitress drop them, but uWSGI joins them with the real header in the order
    they arrived: without the ``RequestHeader unset ... early`` lines of apache-realip.conf a
    client sending ``X-Forwarded-For: 1.1.1.1`` and ``X_Forwarded_For: 6.6.6.6``
    is seen as 6.6.6.6 by a uWSGI app (observed; docs/security.md).
    """
    body, _ = get(apache_port, "127.0.0.2", forged)
    assert body["client"][0] == "127.0.0.2"
    assert body["error"] is None
    assert all("6.6.6.6" not in value for value in body["headers"].values()), body["headers"]


#: What each WSGI server makes of ``X-Real-IP: 1.1.1.1`` plus ``X_Real_IP: 6.6.6.6``
#: (HTTP_X_REAL_IP), as docs/security.md's table says.
UNDERSCORE_HANDLING = {
    "gunicorn": "1.1.1.1",  # --header-map drop (its default)
    "werkzeug": "1.1.1.1",  # dropped since Werkzeug 2.3
    "waitress": "1.1.1.1",  # dropped
    "uwsgi": "1.1.1.1, 6.6.6.6",  # joined, in the order they arrived
}


@pytest.mark.parametrize("name", sorted(UNDERSCORE_HANDLING))
def test_what_wsgi_servers_do_with_underscore_spellings(name: str, tmp_path: Any) -> None:
    argv = {**APPS, "waitress": waitress_argv("tests.apps.echo:wsgi_app")}[name]
    # realip strips every forwarding header from this untrusted client: keep them, to see what the server did.
    env = {"REALIP_STRIP_UNTRUSTED_HEADERS": "off"}
    with serve(name, argv, tmp_path, env=env) as app, client("127.0.0.2") as c:
        body = c.get(
            f"http://127.0.0.1:{app.port}/", headers=[("X-Real-IP", "1.1.1.1"), ("X_Real_IP", "6.6.6.6")]
        ).json()
    assert body["headers"].get("x-real-ip") == UNDERSCORE_HANDLING[name]


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3", "::1"])
def test_client_bypassing_apache_cannot_choose_its_address(apache_app: Server, source: str) -> None:
    if apache_app.name == "uwsgi" and source == "::1":
        source = "127.0.0.3"  # this uWSGI listens on 127.0.0.1 only
    body, port = get(apache_app.port, source, FORGERIES[-1])
    assert body["client"] == [source, 0 if apache_app.name == "uwsgi" else port]
    assert body["headers"].get(apache_app.extra["strategy"]) is None  # stripped: the client wrote it


# ------------------------------------------------------------------------------ squid


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def squid_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"REALIP_TRUSTED_PROXIES": PROXY, "REALIP_STRATEGY": "x-forwarded-for"}
    yield from start_app(request.param, tmp_path_factory.mktemp(f"squid-{request.param}"), env)


@pytest.fixture(scope="module")
def squid_port(squid_app: Server) -> Iterator[int]:
    with squid(squid_app.extra["tmp"], "squid-realip.conf", UPSTREAM=squid_app.port, BIND=PROXY) as port:  # type: ignore[arg-type]
        yield port


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("forged", FORGERIES, ids=forgery_id)
def test_client_behind_squid_is_seen_whatever_it_forges(
    squid_app: Server, squid_port: int, source: str, forged: dict[str, str]
) -> None:
    body, _ = get(squid_port, source, forged)
    assert body["client"][0] == source
    assert body["source"] == "x-forwarded-for"
    assert body["hops"] == [PROXY]
    assert body["error"] is None


def test_squid_appends_the_client_to_x_forwarded_for(squid_app: Server, squid_port: int) -> None:
    body, _ = get(squid_port, "::1", {"X-Forwarded-For": "6.6.6.6"})
    assert body["headers"]["x-forwarded-for"] == "6.6.6.6, ::1"


# ------------------------------------------------------------------------------ two proxies in a row


@pytest.fixture(scope="module")
def apache_then_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """client -> Apache -> nginx -> app. nginx reaches the app from 127.0.0.10 and sees
    Apache as 127.0.0.1; the app trusts both."""
    tmp = tmp_path_factory.mktemp("apache-nginx")
    env = {"REALIP_TRUSTED_PROXIES": f"{PROXY},{APACHE_PEER}", "REALIP_STRATEGY": "x-forwarded-for"}
    for app in start_app("uvicorn", tmp, env):
        with (
            nginx(tmp, "nginx-realip.conf", UPSTREAM=app.port, BIND=PROXY) as inner,
            apache(tmp, "apache-realip.conf", UPSTREAM=inner) as outer,
        ):
            yield outer


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
@pytest.mark.parametrize("forged", FORGERIES[:5], ids=forgery_id)
def test_apache_then_nginx(apache_then_nginx: int, source: str, forged: dict[str, str]) -> None:
    body, _ = get(apache_then_nginx, source, forged)
    assert body["client"][0] == source
    assert body["hops"] == [APACHE_PEER, PROXY]
    assert body["error"] is None


@pytest.fixture(scope="module")
def nginx_then_uwsgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("nginx-uwsgi")
    env = {"REALIP_TRUSTED_PROXIES": PROXY, "REALIP_STRATEGY": "x-forwarded-for"}
    for app in start_app("uwsgi", tmp, env):
        with nginx(tmp, "nginx-realip.conf", UPSTREAM=app.port, BIND=PROXY) as port:
            yield port


@pytest.mark.parametrize("forged", UNDERSCORE_FORGERIES, ids=forgery_id)
def test_nginx_drops_underscore_spellings(nginx_then_uwsgi: int, forged: dict[str, str]) -> None:
    """nginx ignores request headers with underscores (underscores_in_headers off):
    even uWSGI, which would join them to the real header, never sees them."""
    body, _ = get(nginx_then_uwsgi, "127.0.0.2", forged)
    assert body["client"][0] == "127.0.0.2"
    assert all("6.6.6.6" not in value for value in body["headers"].values()), body["headers"]


# ------------------------------------------------------------------------------ nginx stream + PROXY protocol

PROXY_PROTOCOL_ENV = {
    "REALIP_PROXY_PROTOCOL": "on",
    "REALIP_PROXY_PROTOCOL_PEERS": PROXY,
    "REALIP_PROXY_PROTOCOL_TIMEOUT": "2",
    "REALIP_TOA": "off",
}


STREAM_APPS = {
    "uvicorn-h11": uvicorn_argv("tests.apps.echo:asgi_app", realip="H11Protocol"),
    "uvicorn-httptools": uvicorn_argv("tests.apps.echo:asgi_app", realip="HttpToolsProtocol"),
    "gunicorn-realip-worker": gunicorn_argv("tests.apps.echo:asgi_app", worker="realip.gunicorn.UvicornWorker"),
}


@pytest.fixture(scope="module", params=sorted(STREAM_APPS))
def stream(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Server]]:
    tmp = tmp_path_factory.mktemp(f"stream-{request.param}")
    # A plain GET from the test would be closed (not an allowed PROXY peer): wait for the log.
    argv = STREAM_APPS[request.param]
    ready = "Application startup complete"
    with (
        serve(request.param, argv, tmp, env=PROXY_PROTOCOL_ENV, ready=False, ready_log=ready) as app,
        nginx(tmp, "nginx-stream-proxy-protocol.conf", UPSTREAM=app.port, BIND=PROXY) as port,
    ):
        yield port, app


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("forged", FORGERIES[:3], ids=forgery_id)
def test_client_through_nginx_stream_with_proxy_protocol(
    stream: tuple[int, Server], source: str, forged: dict[str, str]
) -> None:
    port, _ = stream
    body, own_port = get(port, source, forged)
    assert body["client"] == [source, own_port]  # the port too: PROXY protocol carries it
    assert body["source"] == "proxy-protocol"
    assert body["hops"] == [PROXY]
    header = body["proxy_protocol"]
    assert header["version"] == 1 and header["command"] == "proxy"
    assert header["family"] == ("tcp6" if ":" in source else "tcp4")
    assert header["destination"][1] == port


def test_websocket_through_nginx_stream(stream: tuple[int, Server]) -> None:
    port, _ = stream
    message = websocket_whoami(f"ws://[::1]:{port}/ws", "::1")
    assert message["client"][0] == "::1"
    assert message["source"] == "proxy-protocol"


def test_client_bypassing_nginx_stream_is_closed(stream: tuple[int, Server]) -> None:
    import httpx

    _, app = stream
    with pytest.raises(httpx.TransportError), client("127.0.0.2") as c:
        c.get(f"http://127.0.0.1:{app.port}/")
    assert "peer may not send a PROXY header" in app.wait_for_log("peer may not send a PROXY header")


# ------------------------------------------------------------------------------ gunicorn's own allow-list


@pytest.mark.parametrize("allow", [PROXY, f"{PROXY},::ffff:{PROXY}"])
def test_gunicorn_proxy_allow_from_does_not_match_mapped_peers(tmp_path: Any, allow: str) -> None:
    """On a dual-stack socket gunicorn sees its load balancer as ``::ffff:127.0.0.10``,
    which ``--proxy-allow-from 127.0.0.10`` does not match: every request is refused
    (403). docs/security.md says to list both spellings (as test_haproxy.py does)."""
    import socket

    argv = gunicorn_argv(
        "tests.apps.echo:wsgi_app", worker="gthread", extra=["--proxy-protocol", "auto", "--proxy-allow-from", allow]
    )
    with serve("gunicorn", argv, tmp_path, ready=False, ready_log="Booting worker") as app:
        # What HAProxy's send-proxy writes, from the load balancer's address.
        request = b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", app.port), timeout=10, source_address=(PROXY, 0)) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    status = answer.split(b"\r\n", 1)[0]
    if allow == PROXY:
        assert b" 403 " in status, answer[:300]
    else:
        assert b" 200 " in status, answer[:300]
        assert b'"client": ["198.51.100.1", 5555]' in answer
