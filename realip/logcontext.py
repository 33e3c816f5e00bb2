"""The client of the request being handled, in every log record written meanwhile.

realip's middlewares bind what they decided (a :class:`~realip.Resolution`) to
the context variable :data:`current` for as long as the application handles
the request, in every process that imports this module (each way of reading
the context does; where nothing reads it, nothing is set per request): under
asyncio each request runs in its own task, whose context is its own; under
threads each thread has its own context; code that hands work to a thread
pool with ``contextvars`` (``asyncio.to_thread``, Starlette's
``run_in_threadpool``, asgiref's ``sync_to_async``) takes it along. Outside a
request (start-up, a background thread) nothing is bound.

:class:`ClientFilter` copies it into each log record as three attributes, for
any formatter: ``%(client)s`` (the client's IP), ``%(peer)s`` (the socket
peer's IP, as the server reported it) and ``%(client_source)s`` (what decided
the client: ``peer``, ``mapped``, ``toa``, ``x-forwarded-for``, ...), each
``"-"`` when there is none. One line of setup, after the handlers exist::

    logging.basicConfig(format="%(asctime)s %(client)s %(message)s")
    realip.logcontext.install()

or in a ``logging.config.dictConfig`` dictionary, a filter
``{"()": "realip.logcontext.ClientFilter"}`` on each handler.
:func:`structlog_processor` adds the same keys to a structlog event.

**What it trusts**: the record says what realip decided, nothing more; a
client address believed from a forwarding header was believed only from a
trusted proxy. A filter runs in the thread that emits the record; with a
``QueueHandler``, put the filter on the ``QueueHandler`` (the listener's
thread has no request). The guide: ``docs/downstream/logging.md``.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextvars import Token
from typing import Any, Final

from . import _context
from .result import Resolution

__all__ = ["NONE", "ClientFilter", "bind", "current", "fields", "install", "structlog_processor", "unbind"]

#: What a record or event shows when there is no request, or no address.
NONE: Final = "-"

current: Final = _context.current
"""What realip decided for the request being handled in this context, or ``None``."""

#: Importing this module is how anything reads the context, so it is what makes
#: realip's middlewares bind it: a process that never imports it pays nothing per request.
_context.BINDING.on = True


def bind(resolution: Resolution) -> Token[Resolution | None]:
    """Make ``resolution`` the current one, until :func:`unbind` with the token returned.

    Called by realip's middlewares around the application (and by a test's
    own middleware); call ``unbind`` in a ``finally`` in the same context.
    """
    return current.set(resolution)


def unbind(token: Token[Resolution | None]) -> None:
    """Put back what was current before the :func:`bind` that returned ``token``."""
    current.reset(token)


def fields(resolution: Resolution | None = None) -> tuple[str, str, str]:
    """``(client, peer, client_source)`` as the records show them, for ``resolution``
    (by default the current one); ``"-"`` for what is missing."""
    if resolution is None:
        resolution = current.get()
        if resolution is None:
            return NONE, NONE, NONE
    client = resolution.client
    peer = resolution.peer
    return (
        client[0] if client is not None else NONE,
        str(peer[0]) if peer is not None and peer[0] else NONE,
        resolution.source,
    )


class ClientFilter(logging.Filter):
    """Adds ``client``, ``peer`` and ``client_source`` to every record it sees.

    On a handler (every record that handler writes) or on a logger (records
    logged through that logger only, not those propagated from its children).
    Never drops a record. Attributes a record already has (from ``extra=``)
    are left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        attributes = record.__dict__
        if "client" not in attributes or "peer" not in attributes or "client_source" not in attributes:
            client, peer, source = fields()
            attributes.setdefault("client", client)
            attributes.setdefault("peer", peer)
            attributes.setdefault("client_source", source)
        return True


def install(logger: logging.Logger | str | None = None) -> ClientFilter:
    """Add a :class:`ClientFilter` to every handler of ``logger`` (the root logger
    by default; a name such as ``"uvicorn.access"`` or a logger), and return it.

    Handlers added later do not get it: call this after ``logging.basicConfig``,
    ``dictConfig`` or the server's own logging set-up. Handlers that already have
    a ``ClientFilter`` are skipped, so calling it twice changes nothing. With no
    handler at all it raises ``ValueError``: records would reach Python's
    last-resort handler, which has no format to show the client in.
    """
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    if not target.handlers:
        raise ValueError(
            f"realip.logcontext.install(): the logger {target.name!r} has no handlers yet; "
            "configure logging first (logging.basicConfig, dictConfig), then install"
        )
    found = ClientFilter()
    for handler in target.handlers:
        if not any(isinstance(existing, ClientFilter) for existing in handler.filters):
            handler.addFilter(found)
    return found


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor adding ``client``, ``peer`` and ``client_source`` to each event.

    ``structlog.configure(processors=[realip.logcontext.structlog_processor, ...,
    structlog.processors.JSONRenderer()])``; keys the event already has are kept.
    """
    client, peer, source = fields()
    event_dict.setdefault("client", client)
    event_dict.setdefault("peer", peer)
    event_dict.setdefault("client_source", source)
    return event_dict
