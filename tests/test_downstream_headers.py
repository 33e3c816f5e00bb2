"""``downstream_headers``: libraries that read X-Forwarded-For themselves get the client realip decided.

Real django-ipware, Flask (Werkzeug's ``access_route``) and slowapi behind a
real nginx; the client forges the leftmost ``X-Forwarded-For`` entry, which
is what these libraries read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from realip.downstream import chain, forwarded_value, rewrite_asgi, rewrite_wsgi
from realip.result import Resolution

from .support.clients import client
from .support.programs import require_program
from .support.proxies import nginx
from .support.servers import gunicorn_argv, serve, uvicorn_argv

PROXY = "127.0.0.10"
FORGED = "6.6.6.6"
APPS = {
    "django-ipware": gunicorn_argv("tests.apps.downstream:django_app", worker="gthread"),
    "flask-access-route": gunicorn_argv("tests.apps.downstream:flask_app", worker="gthread"),
    "slowapi-get-ipaddr": uvicorn_argv("tests.apps.downstream:starlette_app"),
}
#: What each library reports without the option, behind nginx, for a client that forged the leftmost entry.
WITHOUT = {"django-ipware": FORGED, "flask-access-route": FORGED, "slowapi-get-ipaddr": "127.0.0.2"}


@pytest.fixture(scope="module", params=[(name, on) for name in APPS for on in (False, True)],
                ids=lambda p: f"{p[0]}-{'on' if p[1] else 'off'}")  # fmt: skip
def behind_nginx(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, bool, int]]:
    require_program("nginx")
    name, on = request.param
    tmp = tmp_path_factory.mktemp(f"{name}-{on}")
    env = {"REALIP_TRUSTED_PROXIES": PROXY, "REALIP_DOWNSTREAM_HEADERS": "on" if on else "off"}
    with (
        serve(name, APPS[name], tmp, env=env) as app,
        nginx(tmp, "nginx-realip.conf", UPSTREAM=app.port, BIND=PROXY) as port,
    ):
        yield name, on, port


def get(port: int, source: str, headers: dict[str, str]) -> dict[str, Any]:
    with client(source) as c:
        response = c.get(f"http://127.0.0.1:{port}/", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_libraries_see_the_client_realip_decided(behind_nginx: tuple[str, bool, int]) -> None:
    name, on, port = behind_nginx
    body = get(port, "127.0.0.2", {"X-Forwarded-For": f"{FORGED}, 7.7.7.7", "X-Real-IP": FORGED})
    assert body["client"] == "127.0.0.2"
    if on:
        assert body["library"] == "127.0.0.2"
        assert body["xff"] == "127.0.0.2" and body["x_real_ip"] == "127.0.0.2"
    else:
        assert body["library"] == WITHOUT[name]  # what the library believes without the option


def test_a_client_bypassing_the_proxy_gets_the_same_treatment(tmp_path: Path) -> None:
    env = {"REALIP_TRUSTED_PROXIES": PROXY, "REALIP_DOWNSTREAM_HEADERS": "on"}
    with serve("django", APPS["django-ipware"], tmp_path, env=env) as app:
        body = get(app.port, "127.0.0.3", {"X-Forwarded-For": FORGED, "X-Real-IP": FORGED})
    assert body == {"library": "127.0.0.3", "client": "127.0.0.3", "xff": "127.0.0.3", "x_real_ip": "127.0.0.3"}


def resolution(client: tuple[str, int] | None, hops: tuple[str, ...]) -> Resolution:
    return Resolution(client=client, peer=("10.0.0.1", 1), source="x-forwarded-for", hops=hops)


@pytest.mark.parametrize(
    ("hops", "expected"),
    [((), ["203.0.113.5"]), (("10.0.0.1",), ["203.0.113.5"]),
     (("198.51.100.9", "10.0.0.1"), ["203.0.113.5", "198.51.100.9"])],
)  # fmt: skip
def test_the_chain_is_the_client_and_the_trusted_hops_a_proxy_writes(
    hops: tuple[str, ...], expected: list[str]
) -> None:
    assert chain(resolution(("203.0.113.5", 0), hops)) == expected


def test_rewrites_for_each_header_kind() -> None:
    answer = resolution(("2001:db8::5", 0), ("198.51.100.9", "10.0.0.1"))
    assert forwarded_value(chain(answer)) == 'for="[2001:db8::5]", for=198.51.100.9'
    scope: dict[str, Any] = {"headers": [(b"forwarded", b"for=6.6.6.6"), (b"x-real-ip", b"6.6.6.6"), (b"host", b"a")]}
    rewrite_asgi(scope, answer, "forwarded")
    assert scope["headers"] == [(b"host", b"a"), (b"forwarded", b'for="[2001:db8::5]", for=198.51.100.9'),
                                (b"x-real-ip", b"2001:db8::5")]  # fmt: skip
    environ: dict[str, Any] = {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.9"}
    rewrite_wsgi(environ, answer, "x-forwarded-for")
    assert environ == {"HTTP_X_FORWARDED_FOR": "2001:db8::5, 198.51.100.9", "HTTP_X_REAL_IP": "2001:db8::5"}
    unix: dict[str, Any] = {"HTTP_X_FORWARDED_FOR": "6.6.6.6", "HTTP_X_REAL_IP": "6.6.6.6"}
    rewrite_wsgi(unix, resolution(None, ()), "x-forwarded-for")
    assert unix == {}
