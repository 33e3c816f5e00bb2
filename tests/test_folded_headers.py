"""Folded header spellings under WSGI: what each server makes of ``X_Forwarded_For``.

WSGI names a header ``HTTP_`` + its name upper-cased with dashes turned into
underscores, so ``X_Forwarded_For: 6.6.6.6`` and ``X-Forwarded-For: 6.6.6.6``
both become ``HTTP_X_FORWARDED_FOR``. A server that keeps the underscore
spelling lets a client write (part of) the header realip reads, and realip,
handed only the environ, cannot tell. Each WSGI server is started for real on
loopback with ``tests/apps/environ_dump.py`` and sent raw bytes (so each
spelling is exactly as written):

* ``X_Forwarded_For: 6.6.6.6`` alone;
* ``X-Forwarded-For: 1.2.3.4`` then ``X_Forwarded_For: 6.6.6.6``;
* the same two, underscore first.

What lands in ``HTTP_X_FORWARDED_FOR`` is pinned per server (``EXPECTED``): a
new server version that changes it fails here. Then, with nginx in front: its
defaults drop underscore headers, so nothing forged reaches any server; with
``underscores_in_headers on`` it passes the client's ``X_Forwarded_For`` after
its own ``X-Forwarded-For``, and realip behind a folding server reports the
forged address. Last, what nginx passes on under the settings people write.

The results become ``docs/_generated/folded-headers.md``. The test fails when
the committed file is not what it generates; refresh it with
``REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_folded_headers.py`` and
review the difference.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from .support import proxies
from .support.programs import require_program
from .support.proxies import nginx
from .support.servers import (
    ROOT,
    gunicorn_argv,
    hypercorn_argv,
    serve,
    uvicorn_argv,
    uwsgi_argv,
    waitress_argv,
    werkzeug_argv,
)

GENERATED = ROOT / "docs" / "_generated" / "folded-headers.md"
REGENERATE = os.environ.get("REALIP_REGENERATE", "").lower() in ("1", "true", "yes")
REFRESH = "REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_folded_headers.py"

APP = "tests.apps.environ_dump:realip_app"
PROXY = "127.0.0.10"  # nginx's proxy_bind: the one address the apps trust
CLIENT = "127.0.0.2"  # the client behind nginx
REAL = "1.2.3.4"  # what the dashed header says
FORGED = "6.6.6.6"  # what the underscore spelling says
TIMEOUT = 5.0  # every socket operation, and a whole exchange
KEY = "HTTP_X_FORWARDED_FOR"

#: The three requests sent straight to each server (header lines in order).
CASES: dict[str, tuple[tuple[str, str], ...]] = {
    "alone": (("X_Forwarded_For", FORGED),),
    "dashed first": (("X-Forwarded-For", REAL), ("X_Forwarded_For", FORGED)),
    "underscore first": (("X_Forwarded_For", FORGED), ("X-Forwarded-For", REAL)),
}


# ------------------------------------------------------------------------------ the servers


@dataclass(frozen=True)
class WsgiServer:
    key: str
    label: str
    """Markdown: the server and how it is run."""
    package: str | None
    """The distribution whose version is reported (``None``: the standard library)."""
    argv: Sequence[str]
    log_says: str | None = None
    """A line the server's log must contain (that it runs the way the label says)."""


@dataclass(frozen=True)
class Expected:
    """What ``HTTP_X_FORWARDED_FOR`` holds (``None``: absent) for each of ``CASES``, and the
    client realip reports behind nginx (its defaults; ``underscores_in_headers on``)."""

    alone: str | None
    dashed_first: str | None
    underscore_first: str | None
    behind_nginx: tuple[str, str]

    def direct(self) -> dict[str, str | None]:
        return dict(zip(CASES, (self.alone, self.dashed_first, self.underscore_first), strict=True))


def _waitress_keeping_proxy_headers() -> list[str]:
    argv = waitress_argv(APP)
    argv.insert(-1, "--no-clear-untrusted-proxy-headers")
    return argv


SERVERS = [
    WsgiServer(
        "uvicorn-h11", "uvicorn `--interface wsgi`", "uvicorn", uvicorn_argv(APP, extra=["--interface", "wsgi"])
    ),
    WsgiServer(
        "uvicorn-httptools",
        "uvicorn `--interface wsgi --http httptools`",
        "uvicorn",
        uvicorn_argv(APP, http="httptools", extra=["--interface", "wsgi"]),
    ),
    WsgiServer("hypercorn", "Hypercorn, `hypercorn wsgi:module:app`", "hypercorn", hypercorn_argv(f"wsgi:{APP}")),
    WsgiServer("uwsgi", "uWSGI `--http-socket`", "uwsgi", uwsgi_argv(APP)),
    WsgiServer(
        "wsgiref",
        "`wsgiref.simple_server`",
        None,
        [sys.executable, "-m", "tests.apps.environ_dump", "{port}", APP.partition(":")[2]],
    ),
    WsgiServer(
        "gunicorn",
        "gunicorn, sync worker",
        "gunicorn",
        gunicorn_argv(APP, extra=["--threads", "1"]),  # more threads would switch to gthread
        log_says="Using worker: sync",
    ),
    WsgiServer(
        "gunicorn-dangerous",
        "gunicorn `--header-map dangerous`",
        "gunicorn",
        gunicorn_argv(APP, extra=["--threads", "1", "--header-map", "dangerous"]),
        log_says="Using worker: sync",
    ),
    WsgiServer(
        "gunicorn-refuse",
        "gunicorn `--header-map refuse`",
        "gunicorn",
        gunicorn_argv(APP, extra=["--threads", "1", "--header-map", "refuse"]),
        log_says="Using worker: sync",
    ),
    WsgiServer("werkzeug", "Werkzeug development server", "werkzeug", werkzeug_argv(APP)),
    WsgiServer("waitress", "waitress", "waitress", waitress_argv(APP)),
    WsgiServer(
        "waitress-keep",
        "waitress `--no-clear-untrusted-proxy-headers`",
        "waitress",
        _waitress_keeping_proxy_headers(),
    ),
]

FOOLED = (CLIENT, FORGED)  # behind nginx: right with its defaults, forged with underscores_in_headers on
SAFE = (CLIENT, CLIENT)
REFUSED = "HTTP 400"  # the request is answered 400, the app never runs
EXPECTED = {
    "uvicorn-h11": Expected(FORGED, f"{REAL},{FORGED}", f"{FORGED},{REAL}", FOOLED),
    "uvicorn-httptools": Expected(FORGED, f"{REAL},{FORGED}", f"{FORGED},{REAL}", FOOLED),
    "hypercorn": Expected(FORGED, f"{REAL},{FORGED}", f"{FORGED},{REAL}", FOOLED),
    "uwsgi": Expected(FORGED, f"{REAL}, {FORGED}", f"{FORGED}, {REAL}", FOOLED),
    "wsgiref": Expected(FORGED, f"{REAL},{FORGED}", f"{FORGED},{REAL}", FOOLED),
    "gunicorn": Expected(None, REAL, REAL, SAFE),  # --header-map drop, its default
    "gunicorn-dangerous": Expected(FORGED, f"{REAL},{FORGED}", f"{FORGED},{REAL}", FOOLED),
    "gunicorn-refuse": Expected(REFUSED, REFUSED, REFUSED, (CLIENT, REFUSED)),
    "werkzeug": Expected(None, REAL, REAL, SAFE),
    # clear_untrusted_proxy_headers (on by default) removes X-Forwarded-For itself:
    # realip never sees a forwarding header, and reports nginx as the client
    "waitress": Expected(None, None, None, (PROXY, PROXY)),
    "waitress-keep": Expected(None, REAL, REAL, SAFE),
}

NOTES = {
    "waitress": (
        "waitress: `clear_untrusted_proxy_headers` (on by default) removes `X-Forwarded-For` itself, with "
        "`Forwarded`, `X-Forwarded-Proto` and the other proxy headers waitress knows, from every peer that is not "
        "its own `--trusted-proxy`: realip then sees no forwarding header and reports the proxy as the client. "
        "`--no-clear-untrusted-proxy-headers` leaves them to realip."
    ),
    "uvicorn-h11": (
        "uvicorn: its WSGI interface is deprecated; with `a2wsgi` installed uvicorn uses that instead of its own "
        "adapter (the version column says which one ran)."
    ),
}


# ------------------------------------------------------------------------------ nginx in front


@dataclass(frozen=True)
class NginxSettings:
    key: str
    title: str
    """Markdown: what a configuration says."""
    server: str = ""
    """Directives in the ``server`` block."""
    location: str = ""
    """Directives in the ``location`` block, after the proxy's own ``proxy_set_header`` lines."""


#: nginx in front of a server (or of the recorder below): the proxy part of
#: tests/proxies/nginx-realip.conf, with room for the settings under test.
NGINX_TEMPLATE = """\
# Written by tests/test_folded_headers.py: nginx in front of one WSGI server.
worker_processes 1;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log notice;
events { worker_connections 64; }

http {
    access_log @PREFIX@/access.log;
    client_body_temp_path @PREFIX@/body;
    proxy_temp_path @PREFIX@/proxy;
    fastcgi_temp_path @PREFIX@/fastcgi;
    uwsgi_temp_path @PREFIX@/uwsgi;
    scgi_temp_path @PREFIX@/scgi;

    server {
        listen 127.0.0.1:@PORT@;
        listen [::1]:@PORT@;
        @SERVER@

        location / {
            proxy_pass http://127.0.0.1:@UPSTREAM@;
            proxy_bind @BIND@;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            @LOCATION@
        }
    }
}
"""
SPELLINGS = ("X_Forwarded_For", "X_Forwarded-For", "X-Forwarded_For")  # every one folds to HTTP_X_FORWARDED_FOR
DEFAULTS = NginxSettings("defaults", "defaults (`underscores_in_headers off; ignore_invalid_headers on;`)")
UNDERSCORES_ON = NginxSettings("underscores-on", "`underscores_in_headers on;`", server="underscores_in_headers on;")
NGINX_SETTINGS = [
    DEFAULTS,
    UNDERSCORES_ON,
    NginxSettings("ignore-invalid-off", "`ignore_invalid_headers off;`", server="ignore_invalid_headers off;"),
    NginxSettings(
        "underscores-on-one-emptied",
        '`underscores_in_headers on;` and `proxy_set_header X_Forwarded_For "";`',
        server="underscores_in_headers on;",
        location='proxy_set_header X_Forwarded_For "";',
    ),
    NginxSettings(
        "underscores-on-all-emptied",
        '`underscores_in_headers on;` and `proxy_set_header ... "";` for each of '
        + ", ".join(f"`{name}`" for name in SPELLINGS),
        server="underscores_in_headers on;",
        location=" ".join(f'proxy_set_header {name} "";' for name in SPELLINGS),
    ),
]
#: What the client sends nginx for the last table: every underscore spelling, each its own address.
SPELLING_FORGERIES = tuple((name, f"6.6.6.{6 + i}") for i, name in enumerate(SPELLINGS))
_OWN = f"X-Forwarded-For: {CLIENT}"
_ALL = [_OWN, *(f"{name}: {value}" for name, value in SPELLING_FORGERIES)]
#: The header lines (in order) that fold into HTTP_X_FORWARDED_FOR, as nginx sends them on.
NGINX_PASSES = {
    "defaults": [_OWN],
    "underscores-on": _ALL,
    "ignore-invalid-off": _ALL,
    "underscores-on-one-emptied": [_OWN, *_ALL[2:]],  # the other two spellings still pass
    "underscores-on-all-emptied": [_OWN],
}


@contextlib.contextmanager
def nginx_in_front(tmp: Path, upstream: int, settings: NginxSettings) -> Iterator[int]:
    """tests/support/proxies.nginx with NGINX_TEMPLATE: its port on 127.0.0.1 and ::1.

    The template lives here, not in tests/proxies/, because it is an
    experiment (two of its settings are the ones not to use), not a
    configuration to quote: the helper's template directory points at a
    private copy while nginx starts.
    """
    templates = tmp / f"templates-{upstream}"
    templates.mkdir(exist_ok=True)
    (templates / "nginx-folded-headers.conf").write_text(NGINX_TEMPLATE)
    values = {"UPSTREAM": upstream, "BIND": PROXY, "SERVER": settings.server, "LOCATION": settings.location}
    with contextlib.ExitStack() as stack:
        with mock.patch.object(proxies, "PROXIES", templates):
            port = stack.enter_context(nginx(tmp, "nginx-folded-headers.conf", **values))
        yield port


def nginx_version() -> str:
    done = subprocess.run([require_program("nginx"), "-v"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip().rpartition("/")[2]


def have_nginx() -> bool:
    """Whether nginx is here; under CI=true its absence fails (require_program)."""
    try:
        require_program("nginx")
    except pytest.skip.Exception:
        return False
    return True


# ------------------------------------------------------------------------------ raw HTTP


def _read_until(sock: socket.socket, done: Any) -> bytes:
    """Read from ``sock`` until ``done(data)`` or EOF, within TIMEOUT and 1 MiB."""
    deadline = time.monotonic() + TIMEOUT
    data = b""
    while not done(data) and len(data) < 1 << 20:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def exchange(port: int, headers: Sequence[tuple[str, str]], source: str = "127.0.0.1") -> tuple[int, dict[str, Any]]:
    """GET / with exactly these header lines; the status and the JSON body."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}Connection: close\r\n\r\n".encode("ascii")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0)) as sock:
        sock.sendall(request)
        response = _read_until(sock, lambda data: False)  # the server closes: Connection: close
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(None, 2)[1])
    return status, json.loads(body) if status == 200 and body else {}


class _Recorder(socketserver.ThreadingTCPServer):
    """Answers 200 to anything, keeping each request's header lines: what nginx sends, byte for byte."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.requests: list[list[str]] = []


class _RecordingHandler(socketserver.BaseRequestHandler):
    server: _Recorder

    def handle(self) -> None:
        head = _read_until(self.request, lambda data: b"\r\n\r\n" in data)
        self.server.requests.append(head.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:])
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@contextlib.contextmanager
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def folds_into_key(line: str) -> bool:
    name = line.partition(":")[0]
    return "HTTP_" + name.upper().replace("-", "_") == KEY


# ------------------------------------------------------------------------------ observing


@dataclass
class Observation:
    version: str
    direct: dict[str, str | None] = field(default_factory=dict)
    """Per case: ``HTTP_X_FORWARDED_FOR`` (``None``: absent; ``"HTTP 400"``: refused)."""
    elsewhere: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per case: other ``HTTP_*`` keys holding the forged address (none expected)."""
    behind_nginx: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    """Per nginx setting: ``HTTP_X_FORWARDED_FOR`` and the client realip reported (both
    ``"HTTP 400"`` when the server refused the request)."""
    error: str | None = None


def server_version(server: WsgiServer) -> str:
    if server.package is None:
        return "Python {}.{}".format(*sys.version_info[:2])
    text = version(server.package)
    if server.package == "uvicorn":
        try:
            text += f", a2wsgi {version('a2wsgi')}"
        except PackageNotFoundError:
            text += ", its own WSGI adapter"
    return text


def observe(server: WsgiServer, tmp: Path, with_nginx: bool) -> Observation:
    seen = Observation(server_version(server))
    env = {"REALIP_TRUSTED_PROXIES": PROXY, "REALIP_STRATEGY": "x-forwarded-for"}
    try:
        with serve(server.key, server.argv, tmp, env=env) as running:
            if server.log_says is not None and server.log_says not in running.log():
                raise AssertionError(f"{server.key}: no {server.log_says!r} in its log:\n{running.log()[-2000:]}")
            for case, headers in CASES.items():
                status, body = exchange(running.port, headers)
                found = body.get("headers", {})
                seen.direct[case] = found.get(KEY) if status == 200 else f"HTTP {status}"
                seen.elsewhere[case] = {k: v for k, v in found.items() if FORGED in v and k != KEY}
            if with_nginx:
                for settings in (DEFAULTS, UNDERSCORES_ON):
                    with nginx_in_front(tmp, running.port, settings) as port:
                        status, body = exchange(port, [("X_Forwarded_For", FORGED)], source=CLIENT)
                    if status == 200:
                        seen.behind_nginx[settings.key] = (body["headers"].get(KEY), body["remote_addr"])
                    else:
                        seen.behind_nginx[settings.key] = (f"HTTP {status}", f"HTTP {status}")
    except Exception as exc:  # reported by each test of this server, not as one fixture error
        seen.error = f"{type(exc).__name__}: {exc}"
    return seen


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Observation]:
    """Every server, started one after the other (each stopped before the next starts)."""
    with_nginx = have_nginx()
    return {s.key: observe(s, tmp_path_factory.mktemp(s.key), with_nginx) for s in SERVERS}


@pytest.fixture(scope="module")
def nginx_passes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Per nginx setting: the header lines folding into HTTP_X_FORWARDED_FOR that nginx sends on."""
    require_program("nginx")
    tmp = tmp_path_factory.mktemp("nginx-recorder")
    passes = {}
    with recorder() as upstream:
        for settings in NGINX_SETTINGS:
            with nginx_in_front(tmp, upstream.server_address[1], settings) as port:
                status, _ = exchange(port, SPELLING_FORGERIES, source=CLIENT)
                assert status == 200
            passes[settings.key] = [line for line in upstream.requests[-1] if folds_into_key(line)]
    return passes


def result(observed: dict[str, Observation], key: str) -> Observation:
    seen = observed[key]
    assert seen.error is None, seen.error
    return seen


# ------------------------------------------------------------------------------ the table


def direct_cell(case: str, value: str | None) -> str:
    if value is None:
        return "dropped" if case == "alone" else "both dropped"
    if value.startswith("HTTP "):
        return f"refused ({value})"
    if value == FORGED:
        return f"kept: `{value}`" if case == "alone" else f"overwritten: `{value}`"
    if value == REAL:
        return f"`X_Forwarded_For` dropped: `{value}`"
    if REAL in value and FORGED in value:
        return f"merged: `{value}`"
    return f"`{value}`"


def realip_cell(client: str) -> str:
    if client.startswith("HTTP "):
        return f"refused ({client})"
    mark = {CLIENT: "✅ the client", FORGED: "❌ **forged**", PROXY: "➖ the proxy"}.get(client, "?")
    return f"`{client}` {mark}"


def folds(seen: Observation) -> bool:
    return any(value is not None and FORGED in value for value in seen.direct.values())


def verdict(seen: Observation) -> str:
    if folds(seen):
        return "❌ folds: keep your proxy from passing underscore headers"
    if seen.direct["alone"] == REFUSED:
        return "✅ safe: refuses requests with underscore headers"
    return "✅ safe: drops underscore headers"


SERVER_COLUMNS = [
    "server",
    "version",
    f"`X_Forwarded_For: {FORGED}` alone",
    f"`X-Forwarded-For: {REAL}`, then `X_Forwarded_For: {FORGED}`",
    f"`X_Forwarded_For: {FORGED}`, then `X-Forwarded-For: {REAL}`",
    f"realip behind nginx's defaults (client `{CLIENT}` sends `X_Forwarded_For: {FORGED}`)",
    "realip behind nginx with `underscores_in_headers on;`",
    "verdict",
]
NGINX_COLUMNS = ["nginx settings", "header lines nginx sends on that fold into `HTTP_X_FORWARDED_FOR`", "verdict"]


def _table(caption: str, name: str, columns: list[str], rows: list[list[str]]) -> list[str]:
    return [
        f":::{{table}} {caption}",
        f":name: {name}",
        ":widths: auto",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
        ":::",
        "",
    ]


def generate(observed: dict[str, Observation], passes: dict[str, list[str]]) -> str:
    server_rows = []
    for server in SERVERS:
        seen = result(observed, server.key)
        server_rows.append(
            [
                server.label,
                seen.version,
                *(direct_cell(case, seen.direct[case]) for case in CASES),
                realip_cell(seen.behind_nginx[DEFAULTS.key][1]),
                realip_cell(seen.behind_nginx[UNDERSCORES_ON.key][1]),
                verdict(seen),
            ]
        )
    nginx_rows = []
    for settings in NGINX_SETTINGS:
        lines = passes[settings.key]
        forged = any(value in line for line in lines for _, value in SPELLING_FORGERIES)
        nginx_rows.append(
            [
                settings.title,
                "<br>".join(f"`{line}`" for line in lines),
                "❌ passes the client's spellings on, after its own header"
                if forged
                else "✅ none of them reaches the app",
            ]
        )
    forgeries = ", ".join(f"`{name}: {value}`" for name, value in SPELLING_FORGERIES)
    return "\n".join(
        [
            "<!-- Generated by tests/test_folded_headers.py; do not edit. Refresh with:",
            f"     {REFRESH} -->",
            "",
            *_table(
                f"What WSGI servers put in `HTTP_X_FORWARDED_FOR` for the underscore spelling, and the client "
                f"realip then reports behind nginx {nginx_version()} (realip trusting nginx's address, `{PROXY}`)",
                "folded-headers-servers",
                SERVER_COLUMNS,
                server_rows,
            ),
            *(f"* {NOTES[server.key]}" for server in SERVERS if server.key in NOTES),
            "",
            *_table(
                f"What nginx {nginx_version()} sends on when client `{CLIENT}` sends {forgeries}",
                "folded-headers-nginx",
                NGINX_COLUMNS,
                nginx_rows,
            ),
        ]
    )


# ------------------------------------------------------------------------------ tests

needs_nginx = pytest.mark.needs("nginx")


@pytest.mark.parametrize("key", [s.key for s in SERVERS])
def test_what_the_server_puts_in_http_x_forwarded_for(observed: dict[str, Observation], key: str) -> None:
    seen = result(observed, key)
    assert seen.direct == EXPECTED[key].direct(), f"{key} changed: regenerate the table ({REFRESH})"
    assert not any(seen.elsewhere.values()), seen.elsewhere  # the forged value went nowhere else


@needs_nginx
@pytest.mark.parametrize("key", [s.key for s in SERVERS])
def test_behind_nginx_defaults_no_forged_value_reaches_the_server(observed: dict[str, Observation], key: str) -> None:
    require_program("nginx")
    header, client = result(observed, key).behind_nginx[DEFAULTS.key]
    assert header == (None if EXPECTED[key].dashed_first is None else CLIENT)  # nginx's own entry, if kept
    assert client == EXPECTED[key].behind_nginx[0]


@needs_nginx
@pytest.mark.parametrize("key", [s.key for s in SERVERS])
def test_behind_nginx_passing_underscores_folding_servers_report_the_forged_value(
    observed: dict[str, Observation], key: str
) -> None:
    """nginx sends its own ``X-Forwarded-For`` first and the client's ``X_Forwarded_For``
    after it: what the server did with "dashed first", the forged entry rightmost."""
    require_program("nginx")
    seen = result(observed, key)
    header, client = seen.behind_nginx[UNDERSCORES_ON.key]
    dashed_first = seen.direct["dashed first"]
    assert header == (None if dashed_first is None else dashed_first.replace(REAL, CLIENT))
    assert client == EXPECTED[key].behind_nginx[1]
    assert (client == FORGED) == folds(seen)


@needs_nginx
@pytest.mark.parametrize("settings", NGINX_SETTINGS, ids=lambda s: s.key)
def test_what_nginx_sends_on(nginx_passes: dict[str, list[str]], settings: NginxSettings) -> None:
    assert nginx_passes[settings.key] == NGINX_PASSES[settings.key]


@needs_nginx
def test_generated_table_is_up_to_date(observed: dict[str, Observation], nginx_passes: dict[str, list[str]]) -> None:
    text = generate(observed, nginx_passes)
    if REGENERATE:
        GENERATED.parent.mkdir(parents=True, exist_ok=True)
        GENERATED.write_text(text, encoding="utf-8")
        return
    committed = GENERATED.read_text(encoding="utf-8") if GENERATED.exists() else ""
    difference = "".join(difflib.unified_diff(committed.splitlines(True), text.splitlines(True), "committed", "now"))
    assert committed == text, (
        f"{GENERATED.relative_to(ROOT)} is not what the installed servers and nginx do now. "
        f"Regenerate it and review the difference:\n    {REFRESH}\n{difference}"
    )
