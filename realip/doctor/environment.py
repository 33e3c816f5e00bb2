"""The ``REALIP_*`` variables of this environment, checked the way realip
reads them at start-up.

Each variable is shown with its value. Known ones are validated by
:mod:`realip.config` itself (``Settings.build()``, as the middlewares do,
and :class:`~realip.connection.ConnectionResolver`, as the server integrations
do), so a bad value gets the very message the app would fail with. A ``REALIP_*`` name realip does not read is
flagged with the name it probably meant.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Final

from ..config import ENVIRONMENT_VARIABLES, Settings, connection_options_from_env, unknown_variables
from ..connection import ConnectionResolver
from ..errors import ConfigError
from .model import Finding

__all__ = ["PREFIX", "environment_findings", "validate_variables"]

PREFIX: Final = "REALIP_"


@contextlib.contextmanager
def _captured_log() -> Iterator[list[str]]:
    """What realip logs while the block runs (start-up warnings), kept out of stderr."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message not in messages:
                messages.append(message)

    log = logging.getLogger("realip")
    handler = Keep()
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _variable_of(option: str, variables: Mapping[str, str]) -> str | None:
    """The variable a :class:`ConfigError` is about: it names the variable, or the option it sets."""
    for name in (option, PREFIX + option.upper()):
        if name in variables:
            return name
    return None


def validate_variables(variables: Mapping[str, str]) -> tuple[dict[str, ConfigError], list[ConfigError], list[str]]:
    """Build realip's settings from these (known) variables as an app would at start-up.

    Returns the error of each bad variable, the errors no single variable
    explains (a combination), and the warnings realip would log. After an
    error its variable is dropped and the rest built again, so every bad
    variable is found, not only the first.
    """
    remaining = dict(variables)
    errors: dict[str, ConfigError] = {}
    combined: list[ConfigError] = []
    with _captured_log() as warnings:
        for _ in range(len(variables) + 1):
            try:
                Settings.build(environ=remaining)
                ConnectionResolver(**connection_options_from_env(remaining))
            except ConfigError as exc:
                name = _variable_of(exc.option, remaining)
                if name is None:
                    combined.append(exc)
                    break
                errors[name] = exc
                del remaining[name]
            else:
                break
    return errors, combined, warnings


def environment_findings(environ: Mapping[str, str]) -> list[Finding]:
    """One finding per ``REALIP_*`` variable: ``ok`` (valid), ``problem``
    (realip would refuse to start with it) or ``warn`` (realip does not read
    it: ``data["did_you_mean"]`` is the close known name, if any)."""
    variables = {name: value for name, value in sorted(environ.items()) if name.startswith(PREFIX)}
    if not variables:
        return [
            Finding(
                "environment",
                "info",
                "no REALIP_* variables here: realip uses the options given in code, then its defaults",
                "run `realip doctor` with the app's environment (or inside its container) to check its variables",
                {"variables": {}},
            )
        ]
    unknown = dict(unknown_variables(variables))
    known = {name: value for name, value in variables.items() if name not in unknown}
    errors, combined, warnings = validate_variables(known) if known else ({}, [], [])
    findings = []
    for name, value in variables.items():
        data: dict[str, object] = {"variable": name, "value": value, "known": name not in unknown}
        if name in unknown:
            close = unknown[name]
            data["did_you_mean"] = close
            findings.append(
                Finding(
                    "environment",
                    "warn",
                    f"{name}={value!r}: not a realip variable, it does nothing",
                    f"did you mean {close}?" if close else f"realip reads: {', '.join(ENVIRONMENT_VARIABLES)}",
                    data,
                )
            )
        elif name in errors:
            error = errors[name]
            data.update(valid=False, error=str(error), hint=error.why)
            findings.append(
                Finding(
                    "environment",
                    "problem",
                    f"{name}={value!r}: not valid: {error.why}",
                    "realip refuses to start with it (ConfigError); "
                    "see docs/troubleshooting.md#configerror-at-start-up",
                    data,
                )
            )
        else:
            data["valid"] = True
            findings.append(Finding("environment", "ok", f"{name}={value!r}", "", data))
    for error in combined:
        findings.append(
            Finding(
                "environment",
                "problem",
                f"the REALIP_* variables together are not valid: {error.option}: {error.why}",
                "realip refuses to start with them (ConfigError); see docs/troubleshooting.md#configerror-at-start-up",
                {"error": str(error), "hint": error.why},
            )
        )
    for message in warnings:
        findings.append(
            Finding("environment", "warn", f"at start-up realip would log: {message}", "", {"log": message})
        )
    return findings
