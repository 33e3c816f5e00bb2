"""Header options of the middlewares, driven in-process with plain ASGI/WSGI calls.

The real-proxy behaviour is in test_nginx.py; this pins down each option's
trust decision and failure mode with exact inputs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from realip import ConfigError, RealIPMiddleware, RealIPWSGIMiddleware

PROXY = "10.0.0.1"


def asgi(middleware_options: dict[str, Any], client: tuple[str, int] | None, headers: list[tuple[str, str]],
         scope_type: str = "http") -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:  # fmt: skip
    """Run one request through RealIPMiddleware; the scope the app saw (or None) and what was sent."""
    seen: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def receive() -> dict:
        return {"type": "http.request"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": scope_type,
        "scheme": "ws" if scope_type == "websocket" else "http",
        "client": client,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
    }
    asyncio.run(RealIPMiddleware(app, environ={}, **middleware_options)(scope, receive, send))
    return (seen[0] if seen else None), sent


def wsgi(options: dict[str, Any], remote: str, headers: dict[str, str]) -> tuple[dict | None, list]:
    seen: list[dict] = []
    started: list = []

    def app(environ: dict, start_response: Any) -> list[bytes]:
        seen.append(environ)
        return [b""]

    environ = {"REMOTE_ADDR": remote, "REMOTE_PORT": "1234", "wsgi.url_scheme": "http", "HTTP_HOST": "backend"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    body = RealIPWSGIMiddleware(app, environ={}, **options)(environ, lambda *a: started.append(a))
    return (seen[0] if seen else None), [started, list(body)]


TRUSTED = {"trusted_proxies": [PROXY]}


def test_no_trusted_proxies_means_headers_are_never_read() -> None:
    scope, _ = asgi({}, (PROXY, 1), [("x-forwarded-for", "1.2.3.4")])
    assert scope["client"] == (PROXY, 1)
    assert scope["extensions"]["realip"].source == "peer"


def test_trusted_proxy_header_decides_with_hops() -> None:
    scope, _ = asgi(TRUSTED, ("::ffff:10.0.0.1", 1), [("X-Forwarded-For", "1.2.3.4, 10.0.0.1")])
    result = scope["extensions"]["realip"]
    assert scope["client"] == ("1.2.3.4", 0)
    assert (result.source, result.hops, result.peer) == (
        "x-forwarded-for",
        ("10.0.0.1", "10.0.0.1"),
        ("::ffff:10.0.0.1", 1),
    )


def test_repeated_header_instances_are_joined_in_order() -> None:
    headers = [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8")]
    scope, _ = asgi(TRUSTED, (PROXY, 1), headers)
    assert scope["client"] == ("5.6.7.8", 0)


def test_untrusted_peer_headers_are_stripped_and_ignored() -> None:
    headers = [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"), ("accept", "*/*")]
    scope, _ = asgi({**TRUSTED, "forwarded_proto": True}, ("192.0.2.9", 1), headers)
    assert scope["client"] == ("192.0.2.9", 1)
    assert scope["headers"] == [(b"accept", b"*/*")]
    assert scope["scheme"] == "http"


def test_stripping_can_be_turned_off() -> None:
    scope, _ = asgi({**TRUSTED, "strip_untrusted_headers": False}, ("192.0.2.9", 1), [("x-forwarded-for", "1.2.3.4")])
    assert scope["headers"] == [(b"x-forwarded-for", b"1.2.3.4")]


def test_garbage_from_trusted_proxy_keeps_last_trusted_hop_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="realip"):
        scope, _ = asgi(TRUSTED, (PROXY, 1), [("x-forwarded-for", "1.2.3.4, <script>")])
    result = scope["extensions"]["realip"]
    assert scope["client"] == (PROXY, 1)
    assert result.error is not None and "x-forwarded-for" in result.error
    assert "forwarding header not believed" in caplog.text
    assert "<script>" not in scope["client"][0]


def test_garbage_with_reject_policy_answers_400_and_never_calls_the_app() -> None:
    scope, sent = asgi({**TRUSTED, "on_failure": "reject"}, (PROXY, 1), [("x-forwarded-for", "<script>")])
    assert scope is None
    assert sent[0]["status"] == 400


def test_reject_policy_on_websocket_closes() -> None:
    scope, sent = asgi({**TRUSTED, "on_failure": "reject"}, (PROXY, 1), [("x-forwarded-for", "x")], "websocket")
    assert scope is None and sent == [{"type": "websocket.close", "code": 1008}]


@pytest.mark.parametrize(("scope_type", "proto", "expected"), [
    ("http", "https", "https"), ("websocket", "https", "wss"), ("websocket", "http", "ws"), ("http", "<x>", "http"),
])  # fmt: skip
def test_forwarded_proto_from_trusted_proxy(scope_type: str, proto: str, expected: str) -> None:
    headers = [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", proto)]
    scope, _ = asgi({**TRUSTED, "forwarded_proto": True}, (PROXY, 1), headers, scope_type)
    assert scope["scheme"] == expected


def test_forwarded_proto_is_off_by_default() -> None:
    scope, _ = asgi(TRUSTED, (PROXY, 1), [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https")])
    assert scope["scheme"] == "http"


def test_rfc7239_proto_and_host_of_the_chosen_element() -> None:
    headers = [("host", "backend"), ("forwarded", 'for=1.2.3.4;proto=https;host="example.com"')]
    options = {**TRUSTED, "strategy": "forwarded", "forwarded_proto": True, "forwarded_host": True}
    scope, _ = asgi(options, (PROXY, 1), headers)
    assert scope["client"] == ("1.2.3.4", 0)
    assert scope["scheme"] == "https"
    assert (b"host", b"example.com") in scope["headers"]


def test_unix_socket_peer_is_trusted_only_by_opt_in() -> None:
    headers = [("x-forwarded-for", "1.2.3.4")]
    scope, _ = asgi(TRUSTED, None, headers)
    assert scope["client"] is None
    scope, _ = asgi({**TRUSTED, "trust_unix_socket_peers": True}, None, headers)
    assert scope["client"] == ("1.2.3.4", 0)


def test_hop_count_and_single_header_strategies() -> None:
    scope, _ = asgi({"trust_all_peers_unsafe": True, "strategy": "x-forwarded-for:2"}, ("192.0.2.1", 1),
                    [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.9.9.9")])  # fmt: skip
    assert scope["client"] == ("1.2.3.4", 0)
    scope, _ = asgi({**TRUSTED, "strategy": "x-real-ip"}, (PROXY, 1), [("x-real-ip", "[2001:db8::1]:443")])
    assert scope["client"] == ("2001:db8::1", 443)


def test_wsgi_applies_the_same_rules() -> None:
    headers = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com"}
    environ, _ = wsgi({**TRUSTED, "forwarded_proto": True, "forwarded_host": True}, PROXY, headers)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("1.2.3.4", "0")
    assert (environ["wsgi.url_scheme"], environ["HTTP_HOST"]) == ("https", "example.com")
    environ, _ = wsgi(TRUSTED, "192.0.2.9", {"X-Forwarded-For": "1.2.3.4"})
    assert environ["REMOTE_ADDR"] == "192.0.2.9" and "HTTP_X_FORWARDED_FOR" not in environ


def test_wsgi_reject_answers_400() -> None:
    environ, (started, body) = wsgi({**TRUSTED, "on_failure": "reject"}, PROXY, {"X-Forwarded-For": "1.2.3.4, ::zz"})
    assert environ is None
    assert started[0][0] == "400 Bad Request" and body == [b"Bad forwarding header\n"]


@pytest.mark.parametrize(("options", "named"), [
    ({"trusted_proxies": "10.0.0.0/8, 10.0.0.1/8"}, "'10.0.0.1/8'"),
    ({"trusted_proxies": ["not-an-ip"]}, "'not-an-ip'"),
    ({"strategy": "x-forwarded-four"}, "'x-forwarded-four'"),
    ({"on_failure": "ignore"}, "'ignore'"),
    ({"forwarded_proto": "yes"}, "'yes'"),
    ({"toa_peers": "100.125.0.0/33"}, "'100.125.0.0/33'"),
    ({"trusted_proxy": ["10.0.0.1"]}, "trusted_proxy"),
])  # fmt: skip
def test_bad_configuration_fails_at_start_up_naming_the_value(options: dict, named: str) -> None:
    for middleware in (RealIPMiddleware, RealIPWSGIMiddleware):
        with pytest.raises(ConfigError) as info:
            middleware(lambda *a: None, environ={}, **options)
        assert named in str(info.value)


def test_environment_configuration_is_validated_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        RealIPMiddleware(lambda *a: None, environ={"REALIP_TRUSTED_PROXIES": "10.0.0.0/8,bogus"})
    assert "REALIP_TRUSTED_PROXIES" in str(info.value) and "bogus" in str(info.value)
    middleware = RealIPWSGIMiddleware(
        lambda *a: None, environ={"REALIP_TRUSTED_PROXIES": "10.0.0.0/8", "REALIP_STRATEGY": "forwarded"}
    )
    assert middleware.settings.strategy.header == "forwarded"


def test_code_wins_over_environment() -> None:
    middleware = RealIPMiddleware(lambda *a: None, environ={"REALIP_ON_FAILURE": "reject"}, on_failure="keep")
    assert middleware.settings.on_failure == "keep"
