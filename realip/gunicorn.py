"""gunicorn integration for ASGI apps: the uvicorn worker with realip's protocols.

::

    gunicorn -k realip.gunicorn.UvicornWorker --bind 0.0.0.0:8000 app:app

WSGI workers (sync, gthread, gevent) need nothing here: they put the
connection's socket in ``environ["gunicorn.socket"]``, where
:class:`realip.RealIPWSGIMiddleware` finds it.
"""

from __future__ import annotations

from typing import Any, ClassVar

try:
    from uvicorn_worker import UvicornWorker as _UvicornWorker
except ImportError as exc:  # uvicorn-worker, or the gunicorn or uvicorn it needs, is not installed
    raise ImportError(
        f"realip.gunicorn needs gunicorn, uvicorn and uvicorn-worker ({exc}): pip install 'realip[gunicorn]'",
        name=exc.name,
    ) from exc

__all__ = ["UvicornH11Worker", "UvicornWorker"]


class UvicornWorker(_UvicornWorker):
    """``uvicorn_worker.UvicornWorker`` with ``realip.uvicorn``'s HTTP and WebSocket protocols.

    uvicorn's own proxy-header handling is switched off: it would rewrite the
    client from ``X-Forwarded-For`` for any peer in gunicorn's
    ``forwarded_allow_ips`` (``127.0.0.1,::1`` by default) before realip sees
    the socket peer. realip's middleware reads the headers instead.
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "realip.uvicorn:AutoHTTPProtocol",
        "ws": "realip.uvicorn:AutoWebSocketsProtocol",
        "proxy_headers": False,
    }


class UvicornH11Worker(UvicornWorker):
    """The same with the pure-Python h11 parser and the asyncio loop."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio",
        "http": "realip.uvicorn:H11Protocol",
        "ws": "realip.uvicorn:AutoWebSocketsProtocol",
        "proxy_headers": False,
    }
