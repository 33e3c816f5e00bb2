"""Behind a real nginx: the app sees the right client, whatever clients forge.

nginx (Debian's package) runs with ``tests/proxies/nginx-realip.conf`` and
connects to the app from ``127.0.0.10`` (``proxy_bind``), the one address the
app trusts; a second nginx in front of it connects from ``127.0.0.11``. The
clients are ``127.0.0.2``, ``127.0.0.3`` and ``::1``, and they lie.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .support.clients import client, target_for
from .support.proxies import nginx
from .support.servers import Server, gunicorn_argv, serve, uvicorn_argv

PROXY = "127.0.0.10"
OUTER_PROXY = "127.0.0.11"
APPS = {
    "uvicorn": uvicorn_argv("tests.apps.echo:asgi_app"),
    "gunicorn": gunicorn_argv("tests.apps.echo:wsgi_app", worker="gthread"),
}
STRATEGIES = ["x-forwarded-for", "forwarded", "x-real-ip"]


def get(port: int, source: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    host = target_for(source)
    netloc = f"[{host}]" if ":" in host else host
    with client(source) as c:
        response = c.get(f"http://{netloc}:{port}/", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module", params=[(app, s) for app in APPS for s in STRATEGIES], ids=lambda p: "-".join(p))
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    name, strategy = request.param
    env = {"REALIP_TRUSTED_PROXIES": f"{PROXY},{OUTER_PROXY}", "REALIP_STRATEGY": strategy}
    tmp = tmp_path_factory.mktemp(f"{name}-{strategy}")
    with serve(name, APPS[name], tmp, env=env) as server:
        server.extra["strategy"] = strategy
        server.extra["tmp"] = tmp
        yield server


@pytest.fixture(scope="module")
def proxy(app: Server) -> Iterator[int]:
    with nginx(app.extra["tmp"], "nginx-realip.conf", UPSTREAM=app.port, BIND=PROXY) as port:  # type: ignore[arg-type]
        yield port


@pytest.fixture(scope="module")
def two_proxies(app: Server, proxy: int) -> Iterator[int]:
    with nginx(app.extra["tmp"], "nginx-realip.conf", UPSTREAM=proxy, BIND=OUTER_PROXY) as port:  # type: ignore[arg-type]
        yield port


FORGERIES = [
    {},
    {"X-Forwarded-For": "6.6.6.6"},
    {"X-Forwarded-For": f"{PROXY}"},  # claims to be the trusted proxy
    {"X-Forwarded-For": "6.6.6.6, 127.0.0.10, 127.0.0.11"},
    {"X-Forwarded-For": "<script>alert(1)</script>"},
    {"X-Forwarded-For": "unknown, , 1.2.3.4:80"},
    {"X-Real-IP": "6.6.6.6"},
    {"Forwarded": "for=6.6.6.6"},
    {"Forwarded": f'for="[2001:db8::66]:443", for={PROXY}'},
    {"Forwarded": 'for="unterminated'},
    {"Forwarded": "for=_hidden;proto=https"},
    {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.7", "Forwarded": "for=6.6.6.8"},
]


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3", "::1"])
@pytest.mark.parametrize("forged", FORGERIES, ids=lambda h: ";".join(f"{k}={v}" for k, v in h.items()) or "none")
def test_client_behind_nginx_is_seen_whatever_it_forges(app: Server, proxy: int, source: str, forged: dict) -> None:
    body = get(proxy, source, forged)
    assert body["client"][0] == source
    assert body["source"] == app.extra["strategy"]
    assert body["hops"] == [PROXY]
    assert body["error"] is None
    assert body["peer"][0] == f"::ffff:{PROXY}"  # the dual-stack socket's view of nginx, kept


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
@pytest.mark.parametrize("forged", FORGERIES[:6], ids=lambda h: ";".join(f"{k}={v}" for k, v in h.items()) or "none")
def test_two_nginx_in_a_row(app: Server, two_proxies: int, source: str, forged: dict) -> None:
    body = get(two_proxies, source, forged)
    if app.extra["strategy"] == "x-real-ip":
        # X-Real-IP is overwritten by each nginx: the inner one names the outer one.
        # One header per deployment: a chain of proxies wants X-Forwarded-For or Forwarded.
        assert body["client"][0] == OUTER_PROXY
        return
    assert body["client"][0] == source
    assert body["hops"] == [OUTER_PROXY, PROXY]


@pytest.mark.parametrize("source", ["127.0.0.2", "::1"])
def test_client_bypassing_the_proxy_cannot_choose_its_address(app: Server, source: str) -> None:
    forged = FORGERIES[-1]
    body = get(app.port, source, forged)
    assert body["client"][0] == source
    assert body["source"] in ("mapped", "peer")
    assert body["headers"].get(app.extra["strategy"]) is None  # the forged header never reached the app
