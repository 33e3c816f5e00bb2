"""A WSGI app that answers with the ``HTTP_*`` keys of its environ, as JSON.

Used by ``tests/test_folded_headers.py`` to see what a WSGI server makes of
header spellings that fold into the same key (``X_Forwarded_For`` and
``X-Forwarded-For`` are both ``HTTP_X_FORWARDED_FOR``).

* ``app``: the environ exactly as the server built it; no realip.
* ``realip_app``: the same keys (read *before* realip, which may strip
  them), then what realip decided; configured from ``REALIP_*`` variables.

``python -m tests.apps.environ_dump PORT [NAME]`` serves ``app`` (or the
app called ``NAME``) with the standard library's ``wsgiref.simple_server`` on
``127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

_SEEN = "environ_dump.headers"


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key.startswith("HTTP_")}


def _answer(start_response: Any, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return _answer(start_response, {"headers": _headers(environ), "remote_addr": environ.get("REMOTE_ADDR")})


def _after_realip(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    decision = environ["realip"]
    body = {
        "headers": environ[_SEEN],
        "remote_addr": environ.get("REMOTE_ADDR"),
        "source": decision.source,
        "error": decision.error,
    }
    return _answer(start_response, body)


@cache
def _realip() -> Any:
    """Built on the first request, so that ``app`` never imports realip."""
    from realip import RealIPWSGIMiddleware

    return RealIPWSGIMiddleware(_after_realip)


def realip_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ[_SEEN] = _headers(environ)
    return _realip()(environ, start_response)


if __name__ == "__main__":
    import sys
    from wsgiref.simple_server import make_server

    port, name = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "app"
    make_server("127.0.0.1", port, globals()[name]).serve_forever()
