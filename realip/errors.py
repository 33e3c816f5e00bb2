"""Errors raised by realip. Requests never see these: they are for start-up."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value is wrong. Raised when a middleware is built.

    The message names the option and the offending value, e.g.::

        realip: trusted_proxies: '10.0.0.1/8' is not valid: 10.0.0.1/8 has host bits set
    """

    def __init__(self, option: str, value: object, why: str) -> None:
        self.option = option
        self.value = value
        self.why = why
        super().__init__(f"realip: {option}: {value!r} is not valid: {why}")
