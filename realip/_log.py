"""Logging that a hostile client cannot flood."""

from __future__ import annotations

import logging
import threading
import time
from typing import Final

logger: Final = logging.getLogger("realip")

#: Seconds between two messages for the same reason.
INTERVAL: Final = 10.0


class RateLimitedLog:
    """At most one message per reason every ``interval`` seconds.

    The next message after a quiet period says how many were suppressed, so
    the log shows that something is going on without growing with it. Reasons
    are fixed strings chosen by realip (never raw input), so the table of
    reasons stays small.
    """

    def __init__(self, log: logging.Logger = logger, interval: float = INTERVAL) -> None:
        self.log = log
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, reason: str, detail: str = "") -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(reason, -self.interval) < self.interval:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                return
            self._last[reason] = now
            suppressed = self._suppressed.pop(reason, 0)
        more = f" ({suppressed} more suppressed)" if suppressed else ""
        self.log.warning("realip: %s%s%s", reason, f": {detail}" if detail else "", more)


class Once:
    """Log a message the first time only (per instance)."""

    def __init__(self) -> None:
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, level: int, message: str, *args: object) -> None:
        with self._lock:
            if message in self._done:
                return
            self._done.add(message)
        logger.log(level, message, *args)
