"""The request's answer for the log context, and whether anything reads it.

Kept apart from :mod:`realip.logcontext` so that the middlewares can bind the
context without importing that module: importing it is what turns binding
on (:data:`BINDING`). A process that never reads the context does not pay for
setting it on every request.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

from .result import Resolution

__all__ = ["BINDING", "Binding", "current"]

current: Final = ContextVar[Resolution | None]("realip.current", default=None)
"""What realip decided for the request being handled in this context, or ``None``."""


class Binding:
    """``on``: realip's middlewares bind :data:`current` around each request."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False


BINDING: Final = Binding()
"""Turned on by importing :mod:`realip.logcontext`, which every way of reading the
context goes through (``install()``, ``ClientFilter`` in a ``dictConfig``, the
structlog processor, ``current``, ``fields()``)."""
