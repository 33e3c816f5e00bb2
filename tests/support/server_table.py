"""The server table of docs/servers.md: what each server gives realip, and how to start it.

Every "yes" names the tests that show it (``file::test[parameter]``), and
:func:`check_evidence` fails when one of them no longer exists. A "no" says
why. :func:`compare_or_regenerate` writes ``docs/_generated/servers.md``
under ``REALIP_REGENERATE=1`` and otherwise fails when the committed file
differs (``tests/test_server_integrations.py`` calls both).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

from .servers import ROOT

GENERATED = ROOT / "docs" / "_generated" / "servers.md"
REGENERATE = os.environ.get("REALIP_REGENERATE", "").lower() in ("1", "true", "yes")
REFRESH = "REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_server_integrations.py"

COLUMNS = ("mapped `::ffff:` unwrapped", "TOA", "PROXY protocol", "WebSocket", "HTTP/2")


@dataclass(frozen=True)
class Cell:
    text: str
    evidence: tuple[str, ...] = ()


def yes(text: str, *evidence: str) -> Cell:
    return Cell(f"yes{text}", evidence)


def no(why: str) -> Cell:
    return Cell(f"no: {why}")


@dataclass(frozen=True)
class Row:
    server: str
    start: tuple[str, ...]
    cells: tuple[Cell, Cell, Cell, Cell, Cell]


NOT_TESTED = Cell("not tested here")
WSGI = Cell("(WSGI)")
TOA_NO_SOCKET = "not in reach of Python"
MAPPED = "tests/test_mapped_peers.py::test_app_sees_unwrapped_client_and_its_port"
TOA = "tests/test_toa_servers.py::test_app_sees_the_nat64_client_and_its_port"
HAPROXY = "tests/test_haproxy.py::test_client_through_haproxy"
MINE = "tests/test_server_integrations.py::"

ROWS = (
    Row(
        "uvicorn (h11, httptools)",
        (
            "realip serve app:app --bind '[::]:8000'",
            "uvicorn app:app --no-proxy-headers --http realip.uvicorn:HttpToolsProtocol "
            "--ws realip.uvicorn:AutoWebSocketsProtocol",
        ),
        (
            yes(
                "",
                f"{MAPPED}[uvicorn-httptools]",
                "tests/test_serve.py::test_one_dual_stack_socket_serves_ipv4_unwrapped_and_ipv6",
            ),
            yes("", f"{TOA}[uvicorn-httptools]"),
            yes(", realip's parser", f"{HAPROXY}[HttpToolsProtocol]"),
            yes(
                "", "tests/test_toa_servers.py::test_websocket_sees_the_nat64_client_with_one_lookup[uvicorn-httptools]"
            ),
            no("uvicorn speaks HTTP/1.1"),
        ),
    ),
    Row(
        "gunicorn, uvicorn's worker",
        ("gunicorn -k realip.gunicorn.UvicornWorker --bind '[::]:8000' app:app",),
        (
            yes("", f"{MAPPED}[gunicorn-uvicorn-worker]"),
            yes("", f"{TOA}[gunicorn-realip-uvicorn-worker]"),
            yes(", realip's parser", f"{HAPROXY}[gunicorn-realip-worker]"),
            yes("", "tests/test_haproxy.py::test_websocket_through_haproxy[gunicorn-realip-worker]"),
            no("uvicorn speaks HTTP/1.1"),
        ),
    ),
    Row(
        "gunicorn, its own ASGI worker",
        ("gunicorn -k realip.gunicorn.ASGIWorker --bind '[::]:8000' app:app",),
        (
            yes("", f"{MINE}test_dual_stack_peers_are_unwrapped[gunicorn-asgi]"),
            yes("", f"{MINE}test_nat64_client_in_the_app_and_the_access_log[gunicorn-asgi]"),
            yes(
                ", realip's parser, or gunicorn's `--proxy-protocol` read by realip",
                f"{MINE}test_client_through_haproxy[gunicorn-asgi]",
                f"{MINE}test_gunicorn_read_the_header_and_realip_reports_it",
            ),
            yes("", f"{MINE}test_websocket_gets_the_nat64_client_with_one_lookup[gunicorn-asgi]"),
            yes(
                ": h2c (`--http-protocols h2,h1 --http2-cleartext both`), TLS with ALPN",
                f"{MINE}test_every_http2_stream_gets_the_connections_answer[gunicorn-asgi]",
                f"{MINE}test_tls_with_alpn_h2_gets_the_nat64_client_and_refuses_a_proxy_header[gunicorn-asgi]",
            ),
        ),
    ),
    Row(
        "gunicorn sync, gthread (WSGI)",
        ("gunicorn --bind '[::]:8000' app:app",),
        (
            yes("", f"{MAPPED}[gunicorn-gthread]"),
            yes("", f"{TOA}[gunicorn-gthread]"),
            yes(
                ": gunicorn's `--proxy-protocol`, read by realip",
                "tests/test_haproxy.py::test_gunicorn_parses_and_realip_reads_what_it_found",
            ),
            WSGI,
            NOT_TESTED,
        ),
    ),
    Row(
        "Hypercorn, asyncio",
        ("python -m realip.hypercorn app:app --bind '[::]:8000'",),
        (
            yes("", f"{MINE}test_dual_stack_peers_are_unwrapped[hypercorn-asyncio]"),
            yes("", f"{MINE}test_nat64_client_in_the_app_and_the_access_log[hypercorn-asyncio]"),
            yes(", realip's parser", f"{MINE}test_client_through_haproxy[hypercorn-asyncio]"),
            yes("", f"{MINE}test_websocket_gets_the_nat64_client_with_one_lookup[hypercorn-asyncio]"),
            yes(
                ": h2c, TLS with ALPN",
                f"{MINE}test_every_http2_stream_gets_the_connections_answer[hypercorn-asyncio]",
                f"{MINE}test_tls_with_alpn_h2_gets_the_nat64_client_and_refuses_a_proxy_header[hypercorn-asyncio]",
            ),
        ),
    ),
    Row(
        "Hypercorn, trio",
        ("python -m realip.hypercorn app:app --bind '[::]:8000' --worker-class trio",),
        (
            yes("", f"{MINE}test_dual_stack_peers_are_unwrapped[hypercorn-trio]"),
            yes("", f"{MINE}test_nat64_client_in_the_app_and_the_access_log[hypercorn-trio]"),
            yes(", realip's parser", f"{MINE}test_client_through_haproxy[hypercorn-trio]"),
            yes("", f"{MINE}test_websocket_gets_the_nat64_client_with_one_lookup[hypercorn-trio]"),
            yes(
                ": h2c, TLS with ALPN",
                f"{MINE}test_every_http2_stream_gets_the_connections_answer[hypercorn-trio]",
                f"{MINE}test_tls_with_alpn_h2_gets_the_nat64_client_and_refuses_a_proxy_header[hypercorn-trio]",
            ),
        ),
    ),
    Row(
        "daphne",
        ("python -m realip.daphne app:application -b 0.0.0.0 -p 8000",),
        (
            yes("", f"{MINE}test_dual_stack_peers_are_unwrapped[daphne]"),
            yes("", f"{MINE}test_nat64_client_in_the_app_and_the_access_log[daphne]"),
            yes(", realip's parser", f"{MINE}test_client_through_haproxy[daphne]"),
            yes("", f"{MINE}test_websocket_gets_the_nat64_client_with_one_lookup[daphne]"),
            Cell("not tested here (daphne has HTTP/2 over TLS only, with Twisted's http2 extra)"),
        ),
    ),
    Row(
        "Werkzeug (`flask run`)",
        ("flask run --host '::'",),
        (
            yes("", f"{MAPPED}[werkzeug]"),
            yes("", f"{TOA}[werkzeug]"),
            no("Werkzeug has none"),
            WSGI,
            no("Werkzeug speaks HTTP/1.1"),
        ),
    ),
    Row(
        "uWSGI `--http-socket`",
        ("uwsgi --http-socket '[::]:8000' --module app:app",),
        (
            NOT_TESTED,
            yes(" (its request log keeps the load balancer)", f"{TOA}[uwsgi-http-socket]"),
            NOT_TESTED,
            WSGI,
            NOT_TESTED,
        ),
    ),
    Row(
        "waitress",
        ("waitress-serve --listen='*:8000' app:app",),
        (
            no("nothing to unwrap (`[::]` is IPv6-only, `*` one socket per family)"),
            Cell(
                "no: no socket in reach; realip says so once",
                ("tests/test_toa_servers.py::test_server_without_socket_access_says_so_once",),
            ),
            no("waitress has none"),
            WSGI,
            no("waitress speaks HTTP/1.1"),
        ),
    ),
    Row(
        "Granian",
        ("(none: use a server above for TOA or PROXY protocol)",),
        (
            yes("", f"{MINE}test_granian_is_named_with_what_works_instead[asgi]"),
            Cell(
                f"no: {TOA_NO_SOCKET} (connections are accepted in Rust)",
                (f"{MINE}test_granian_is_named_with_what_works_instead",),
            ),
            no("not in reach of Python"),
            NOT_TESTED,
            NOT_TESTED,
        ),
    ),
    Row(
        "NGINX Unit",
        ("(none: Unit's own `forwarded` option, or a server above behind Unit)",),
        (
            NOT_TESTED,
            no("connections are accepted by Unit's router process"),
            no("not in reach of Python"),
            NOT_TESTED,
            NOT_TESTED,
        ),
    ),
    Row(
        "mod_wsgi, daemon mode",
        ("(none: Apache's mod_remoteip, or a server above behind Apache)",),
        (
            NOT_TESTED,
            no("the connection is in another process"),
            no("Apache's mod_remoteip reads it before mod_wsgi"),
            WSGI,
            NOT_TESTED,
        ),
    ),
)


def render() -> str:
    head = "| server | start it with realip | " + " | ".join(COLUMNS) + " |"
    lines = [
        "<!-- Generated by tests/test_server_integrations.py from tests/support/server_table.py: do not edit.",
        f"     {REFRESH} -->",
        "",
        head,
        "|" + "---|" * (2 + len(COLUMNS)),
    ]
    for row in ROWS:
        start = "<br>".join(f"`{command}`" if not command.startswith("(") else command for command in row.start)
        lines.append(f"| {row.server} | {start} | " + " | ".join(cell.text for cell in row.cells) + " |")
    lines += ["", "Tests behind each *yes*:", ""]
    for row in ROWS:
        evidence = sorted({e for cell in row.cells for e in cell.evidence})
        if evidence:
            lines.append(f"* {row.server}: " + ", ".join(f"`{e}`" for e in evidence))
    return "\n".join(lines) + "\n"


_NODE = re.compile(r"^(tests/[\w/]+\.py)::(\w+)(?:\[([^\]]+)\])?$")


def check_evidence() -> None:
    """Every "yes" names at least one test, and each named test (and parameter) exists."""
    for row in ROWS:
        for column, cell in zip(COLUMNS, row.cells, strict=True):
            assert not cell.text.startswith("yes") or cell.evidence, f"{row.server}, {column}: a yes without a test"
            for node in cell.evidence:
                found = _NODE.match(node)
                assert found, f"{row.server}, {column}: {node!r} is not file::test[parameter]"
                path, name, parameter = found.groups()
                text = (ROOT / path).read_text()
                assert re.search(rf"^def {name}\(", text, re.MULTILINE), f"{node}: no such test"
                if parameter is not None:
                    sources = text + (ROOT / "tests" / "support" / "integrations.py").read_text()
                    assert f'"{parameter}"' in sources or f"'{parameter}'" in sources, f"{node}: no such parameter"


def compare_or_regenerate() -> None:
    fresh = render()
    if REGENERATE:
        GENERATED.parent.mkdir(parents=True, exist_ok=True)
        GENERATED.write_text(fresh, encoding="utf-8")
        return
    committed = GENERATED.read_text(encoding="utf-8") if GENERATED.exists() else ""
    difference = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True), "committed", "now"))
    assert committed == fresh, (
        f"{GENERATED.relative_to(ROOT)} is out of date. Regenerate it:\n    {REFRESH}\n{difference}"
    )
