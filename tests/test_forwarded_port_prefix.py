"""``X-Forwarded-Port`` and ``X-Forwarded-Prefix`` from trusted proxies
(``forwarded_port``, ``forwarded_prefix``; off by default).

Behind a real nginx (``tests/proxies/nginx-port-prefix.conf``, connecting from
``127.0.0.10``) that serves the app under ``/api`` as if on port 8443:
Starlette's ``request.url_for`` (``docs/snippets/port_prefix_starlette.py``
under uvicorn) and Flask's ``url_for(..., _external=True)``
(``docs/snippets/port_prefix_flask.py`` under gunicorn) must build the URLs the
clients use; what clients forge is overwritten by nginx, or ignored and removed
when they reach the app directly; hostile prefixes and ports that a trusted
proxy passes on are refused. In-process, every rule with exact inputs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from realip import RealIPMiddleware, RealIPWSGIMiddleware, Resolution
from realip.config import ENVIRONMENT_VARIABLES, Settings
from realip.core import path_prefix, port_number
from realip.result import make_resolution

from .support.clients import client, target_for
from .support.proxies import nginx
from .support.servers import ROOT, Server, gunicorn_argv, serve, uvicorn_argv

PROXY = "10.0.0.1"
BOTH = {"trusted_proxies": PROXY, "forwarded_port": True, "forwarded_prefix": True}


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("REALIP_")]:
        monkeypatch.delenv(name)


def asgi(options: dict, peer: str, headers: list[tuple[str, str]], **scope: Any) -> dict:
    """The scope the app sees after RealIPMiddleware (None when the request was rejected)."""
    seen: list[dict] = []
    sent: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def send(message: dict) -> None:
        sent.append(message)

    request = {"type": "http", "scheme": "http", "client": (peer, 5000), "server": ("10.9.9.9", 8000),
               "path": "/items/3", "raw_path": b"/items/3", "root_path": "", "query_string": b"",
               "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers], **scope}  # fmt: skip
    asyncio.run(RealIPMiddleware(app, environ={}, **options)(request, None, send))  # type: ignore[arg-type]
    return seen[0] if seen else {"rejected": sent[0]["status"]}


def wsgi(options: dict, peer: str, headers: dict[str, str], **environ: Any) -> dict:
    seen: list[dict] = []
    request = {"REMOTE_ADDR": peer, "REMOTE_PORT": "5000", "wsgi.url_scheme": "http", "HTTP_HOST": "example.com",
               "SERVER_NAME": "backend", "SERVER_PORT": "8000", "SCRIPT_NAME": "", "PATH_INFO": "/items/3",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}, **environ}  # fmt: skip
    started: list[Any] = []
    RealIPWSGIMiddleware(lambda e, s: seen.append(e) or [b""], environ={}, **options)(
        request, lambda *a: started.append(a)
    )
    return seen[0] if seen else {"rejected": started[0][0]}


def host_of(scope: dict) -> str | None:
    return next((v.decode() for k, v in scope["headers"] if k == b"host"), None)


# ------------------------------------------------------------------------------ the options


def test_off_by_default() -> None:
    headers = [("host", "example.com"), ("x-forwarded-for", "203.0.113.7"), ("x-forwarded-port", "8443"),
               ("x-forwarded-prefix", "/api")]  # fmt: skip
    scope = asgi({"trusted_proxies": PROXY}, PROXY, headers)
    realip = scope["extensions"]["realip"]
    assert (realip.server_port, realip.prefix) == (None, None)
    assert (scope["server"], scope["path"], scope["root_path"], host_of(scope)) == (
        ("10.9.9.9", 8000), "/items/3", "", "example.com",
    )  # fmt: skip
    environ = wsgi({"trusted_proxies": PROXY}, PROXY, dict(headers[1:]))
    assert (environ["SERVER_PORT"], environ["SCRIPT_NAME"], environ["HTTP_HOST"]) == ("8000", "", "example.com")


def test_the_variables_turn_them_on() -> None:
    assert {"REALIP_FORWARDED_PORT", "REALIP_FORWARDED_PREFIX"} <= set(ENVIRONMENT_VARIABLES)
    settings = Settings.build({"REALIP_FORWARDED_PORT": "on", "REALIP_FORWARDED_PREFIX": "yes"})
    assert settings.forwarded_port and settings.forwarded_prefix
    import realip.config

    assert "REALIP_FORWARDED_PORT" in (realip.config.__doc__ or "")
    assert "REALIP_FORWARDED_PREFIX" in (realip.config.__doc__ or "")


def test_asgi_port_goes_into_the_host_header_and_the_server() -> None:
    headers = [("host", "example.com:8000"), ("x-forwarded-for", "203.0.113.7"), ("x-forwarded-port", "8443")]
    scope = asgi(BOTH, PROXY, headers)
    assert scope["extensions"]["realip"].server_port == 8443
    assert (host_of(scope), scope["server"]) == ("example.com:8443", ("10.9.9.9", 8443))
    # the scheme's default port is left out of Host; a bracketed IPv6 host keeps its brackets
    https = [("host", "[2001:db8::1]"), ("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https"),
             ("x-forwarded-port", "443")]  # fmt: skip
    scope = asgi({**BOTH, "forwarded_proto": True}, PROXY, https)
    assert (scope["scheme"], host_of(scope), scope["server"]) == ("https", "[2001:db8::1]", ("10.9.9.9", 443))
    scope = asgi(
        BOTH, PROXY, [("host", "[2001:db8::1]:80"), ("x-forwarded-for", "1.2.3.4"), ("x-forwarded-port", "81")]
    )
    assert host_of(scope) == "[2001:db8::1]:81"
    # no Host header: none is made up; a server without a port is left alone
    scope = asgi(BOTH, PROXY, [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-port", "81")], server=None)
    assert host_of(scope) is None and scope["server"] is None


def test_asgi_prefix_goes_in_front_of_root_path_and_path_as_uvicorn_root_path_does() -> None:
    headers = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-prefix", "/api/")]
    scope = asgi(BOTH, PROXY, headers, root_path="/v1", path="/v1/items/3", raw_path=b"/v1/items/3")
    assert scope["extensions"]["realip"].prefix == "/api"
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api/v1", "/api/v1/items/3", b"/api/v1/items/3")


def test_wsgi_port_and_prefix_go_where_werkzeug_proxyfix_puts_them() -> None:
    headers = {"x-forwarded-for": "203.0.113.7", "x-forwarded-port": "8443", "x-forwarded-prefix": "/api"}
    environ = wsgi(BOTH, PROXY, headers, HTTP_HOST="example.com:8000", SCRIPT_NAME="/app")
    assert (environ["SERVER_PORT"], environ["HTTP_HOST"]) == ("8443", "example.com:8443")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/api/app", "/items/3")
    assert environ["realip"].server_port == 8443 and environ["realip"].prefix == "/api"
    https = {**headers, "x-forwarded-proto": "https", "x-forwarded-port": "443", "x-forwarded-host": "shop.example"}
    environ = wsgi({**BOTH, "forwarded_proto": True, "forwarded_host": True}, PROXY, https)
    assert (environ["wsgi.url_scheme"], environ["HTTP_HOST"], environ["SERVER_PORT"]) == (
        "https",
        "shop.example",
        "443",
    )


def test_the_entry_of_the_proxy_the_client_connected_to() -> None:
    """An appending proxy after a client that forged one: the proxy's entry, the rightmost."""
    headers = [("host", "h"), ("x-forwarded-for", "203.0.113.7"), ("x-forwarded-port", "1, 8443"),
               ("x-forwarded-prefix", "/evil, /api")]  # fmt: skip
    realip = asgi(BOTH, PROXY, headers)["extensions"]["realip"]
    assert (realip.server_port, realip.prefix, realip.error) == (8443, "/api", None)


def test_forwarded_strategy_still_reads_x_forwarded_port_and_prefix() -> None:
    """RFC 7239 has no port and no prefix: the X- headers are read from the trusted proxy all the same."""
    headers = [("host", "h"), ("forwarded", "for=203.0.113.7"), ("x-forwarded-port", "8443"),
               ("x-forwarded-prefix", "/api")]  # fmt: skip
    scope = asgi({**BOTH, "strategy": "forwarded"}, PROXY, headers)
    realip = scope["extensions"]["realip"]
    assert (realip.ip, realip.source, realip.server_port, realip.prefix) == ("203.0.113.7", "forwarded", 8443, "/api")
    environ = wsgi({**BOTH, "strategy": "forwarded"}, PROXY, dict(headers[1:]))
    assert (environ["SERVER_PORT"], environ["SCRIPT_NAME"]) == ("8443", "/api")


def test_forged_values_from_an_untrusted_peer_are_ignored_and_stripped() -> None:
    headers = [("host", "example.com"), ("x-forwarded-port", "1"), ("x-forwarded-prefix", "/evil"),
               ("x_forwarded_prefix", "/evil")]  # fmt: skip
    scope = asgi(BOTH, "198.51.100.9", headers)
    assert scope["headers"] == [(b"host", b"example.com")]
    assert (scope["server"], scope["root_path"], scope["path"]) == (("10.9.9.9", 8000), "", "/items/3")
    environ = wsgi(BOTH, "198.51.100.9", dict(headers[1:3]))
    assert "HTTP_X_FORWARDED_PORT" not in environ and "HTTP_X_FORWARDED_PREFIX" not in environ
    assert (environ["SERVER_PORT"], environ["SCRIPT_NAME"]) == ("8000", "")


BAD_PORTS = ["0", "65536", "99999", "80a", "+80", "-1", "8 0", "123456", "0x50", "8443,", "\xb2"]


@pytest.mark.parametrize("port", BAD_PORTS)
def test_a_port_that_is_not_one_is_an_error(port: str, caplog: pytest.LogCaptureFixture) -> None:
    headers = [("host", "h"), ("x-forwarded-for", "203.0.113.7"), ("x-forwarded-port", port)]
    with caplog.at_level(logging.WARNING, logger="realip"):
        scope = asgi(BOTH, PROXY, headers)
    realip = scope["extensions"]["realip"]
    if port == "8443,":  # the proxy's own entry is the empty one after the comma
        assert realip.server_port is None
    else:
        assert realip.server_port is None and "x-forwarded-port" in (realip.error or ""), port
    assert scope["server"] == ("10.9.9.9", 8000) and host_of(scope) == "h"
    assert realip.client == ("203.0.113.7", 0)  # the client is still believed


HOSTILE_PREFIXES = [
    "api",  # not a path
    "//evil.example",  # a host
    "//evil.example/api",
    "http://evil.example/api",  # a scheme
    "javascript:alert(1)",
    "/a/../admin",
    "/..",
    "/./a",
    "/a//b",
    "/a\\b",
    "/a?b=1",
    "/a#b",
    "/%2e%2e/admin",  # an encoded ..
    "/a b",
    "/a\tb",
    "/a\x00b",
    "/a\x7fb",
    "/caf\xe9",  # not ASCII
    "/<script>",
    "/" + "a" * 256,  # too long
]


@pytest.mark.parametrize("prefix", HOSTILE_PREFIXES)
def test_hostile_prefixes_are_refused(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    headers = [("host", "h"), ("x-forwarded-for", "203.0.113.7"), ("x-forwarded-prefix", prefix)]
    with caplog.at_level(logging.WARNING, logger="realip"):
        scope = asgi(BOTH, PROXY, headers)
    realip = scope["extensions"]["realip"]
    assert realip.prefix is None and (realip.error or "").startswith("x-forwarded-prefix: "), prefix
    assert (scope["root_path"], scope["path"]) == ("", "/items/3")
    assert "x-forwarded-prefix" in caplog.text
    environ = wsgi(BOTH, PROXY, {"x-forwarded-for": "203.0.113.7", "x-forwarded-prefix": prefix})
    assert environ["SCRIPT_NAME"] == "" and environ["realip"].error.startswith("x-forwarded-prefix: ")


def test_a_hostile_prefix_with_reject_answers_400() -> None:
    headers = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-prefix", "/a/../b")]
    assert asgi({**BOTH, "on_failure": "reject"}, PROXY, headers) == {"rejected": 400}
    assert wsgi({**BOTH, "on_failure": "reject"}, PROXY, dict(headers))["rejected"].startswith("400")


def test_the_prefix_rules() -> None:
    assert path_prefix("/api") == ("/api", None)
    assert path_prefix("/api/") == ("/api", None)  # one trailing / dropped
    assert path_prefix("/") == ("", None)  # no prefix
    assert path_prefix("/a/b-c_d~e.f/@x:y;z=1,2") == ("/a/b-c_d~e.f/@x:y;z=1,2", None)
    assert path_prefix("/" + "a" * 255)[0] is not None
    for prefix in HOSTILE_PREFIXES:
        assert path_prefix(prefix)[0] is None, prefix
    assert [port_number(p) for p in ("1", "80", "08443", "65535")] == [1, 80, 8443, 65535]
    assert [port_number(p) for p in BAD_PORTS] == [None] * len(BAD_PORTS)
    assert port_number("\uff18\uff10") is None  # digits, but not ASCII ones


def test_a_slash_alone_is_no_prefix_and_no_error() -> None:
    scope = asgi(BOTH, PROXY, [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-prefix", "/")])
    realip = scope["extensions"]["realip"]
    assert (realip.prefix, realip.error, scope["root_path"], scope["path"]) == (None, None, "", "/items/3")


def test_fast_resolution_constructor_with_the_new_fields() -> None:
    fields = (("1.2.3.4", 5), ("10.0.0.1", 5), "x-forwarded-for", ("10.0.0.1",), None, None, None, "https", "h",
              8443, "/api")  # fmt: skip
    assert make_resolution(*fields) == Resolution(*fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ behind a real nginx

NGINX_PROXY = "127.0.0.10"
SNIPPETS = ROOT / "docs" / "snippets"
#: docs/snippets/port_prefix_starlette.py under uvicorn, docs/snippets/port_prefix_flask.py under gunicorn
APPS = {
    "starlette": uvicorn_argv("port_prefix_starlette:app"),
    "flask": gunicorn_argv("port_prefix_flask:app", worker="gthread"),
}


@pytest.fixture(scope="module", params=list(APPS))
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    env = {"REALIP_TRUSTED_PROXIES": NGINX_PROXY, "PYTHONPATH": os.pathsep.join([str(SNIPPETS), str(ROOT)])}
    with serve(request.param, APPS[request.param], tmp, env=env, ready_path="/items/0") as server:
        server.extra["tmp"] = tmp
        yield server


@pytest.fixture(scope="module")
def proxy(app: Server) -> Iterator[int]:
    with nginx(app.extra["tmp"], "nginx-port-prefix.conf", UPSTREAM=app.port, BIND=NGINX_PROXY) as port:  # type: ignore[arg-type]
        yield port


def get(port: int, source: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    host = target_for(source)
    netloc = f"[{host}]" if ":" in host else host
    with client(source) as c:
        response = c.get(f"http://{netloc}:{port}{path}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def netloc_of(source: str) -> str:
    host = target_for(source)
    return f"[{host}]" if ":" in host else host


FORGERIES = [
    {},
    {"X-Forwarded-Port": "1", "X-Forwarded-Prefix": "/evil"},
    {"X-Forwarded-Port": "1, 2", "X-Forwarded-Prefix": "//evil.example"},
]


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
@pytest.mark.parametrize("forged", FORGERIES, ids=lambda h: ";".join(f"{k}={v}" for k, v in h.items()) or "none")
def test_url_for_builds_the_url_clients_use(app: Server, proxy: int, source: str, forged: dict) -> None:
    body = get(proxy, source, "/api/items/3", forged)
    assert body["url"] == f"http://{netloc_of(source)}:8443/api/items/3"  # Starlette's routing still matched
    assert (body["client"], body["root_path"], body["error"]) == (source, "/api", None)
    assert body["forwarded"]["x-forwarded-prefix"] == "/api"  # nginx overwrote what the client sent
    assert body["forwarded"]["x-forwarded-port"] == "8443"


@pytest.mark.parametrize("forged", FORGERIES[1:], ids=["port-and-prefix", "lists"])
def test_a_client_reaching_the_app_directly_cannot_move_it(app: Server, forged: dict) -> None:
    body = get(app.port, "127.0.0.2", "/items/3", forged)
    assert body["url"] == f"http://127.0.0.1:{app.port}/items/3"
    assert (body["client"], body["root_path"], body["forwarded"]) == ("127.0.0.2", "", {})  # ignored and removed


@pytest.mark.parametrize("prefix", ["//evil.example", "/a/../admin", "http://evil.example", "/%2e%2e", "/a\\b", "/<x>"])
def test_hostile_prefixes_passed_on_by_a_trusted_proxy_are_refused(app: Server, proxy: int, prefix: str) -> None:
    body = get(proxy, "127.0.0.2", "/raw/items/3", {"X-Forwarded-Prefix": prefix, "X-Forwarded-Port": "99999"})
    assert body["url"] == "http://127.0.0.1/items/3"  # nginx's Host: $host, without a port
    assert body["root_path"] == "" and body["error"].startswith("x-forwarded-")
    good = get(proxy, "127.0.0.2", "/raw/items/3", {"X-Forwarded-Prefix": "/raw/", "X-Forwarded-Port": "8080"})
    assert (good["url"], good["error"]) == ("http://127.0.0.1:8080/raw/items/3", None)


def test_the_snippets_are_the_files_docs_show() -> None:
    for name in ("port_prefix_starlette.py", "port_prefix_flask.py"):
        assert (SNIPPETS / name).exists()
        assert f"snippets/{name}" in (ROOT / "docs" / "proxies.md").read_text(encoding="utf-8")
