"""Configuration from the environment, for deployments that cannot edit code.

Every option of the middlewares and of the server integrations can be given as
a ``REALIP_*`` variable. The same validation applies as in code, and a bad
value fails at start-up with :class:`~realip.ConfigError` naming the variable.

==========================  ===============================================
variable                    meaning
==========================  ===============================================
``REALIP_TOA``              ``on`` (default) / ``off``: ask the TOA module
``REALIP_TOA_PEERS``        load balancers whose TOA answers are believed
                            (comma-separated IPs/CIDRs; default: Huawei ELB's
                            ``100.125.0.0/16,100.126.0.0/16``)
==========================  ===============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .connection import ConnectionResolver

__all__ = ["Settings", "connection_options_from_env", "parse_bool"]

_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}


def parse_bool(value: str, *, option: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(option, value, "expected on/off, true/false, yes/no or 1/0")


def connection_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for :class:`~realip.connection.ConnectionResolver`."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    if "REALIP_TOA" in env:
        options["toa"] = parse_bool(env["REALIP_TOA"], option="REALIP_TOA")
    if "REALIP_TOA_PEERS" in env:
        options["toa_peers"] = _networks(env["REALIP_TOA_PEERS"], "REALIP_TOA_PEERS")
    return options


def _networks(value: str, option: str) -> str:
    from .address import parse_networks

    parse_networks(value, option=option)  # validate here, naming the variable
    return value


@dataclass(frozen=True)
class Settings:
    """The validated options of one middleware. Built once, at start-up.

    Options passed in code win over ``REALIP_*`` variables, which win over the
    defaults. An unknown option or a bad value raises :class:`ConfigError`.
    """

    toa: bool = True
    toa_peers: Any = None  # None: DEFAULT_TOA_PEERS

    @classmethod
    def build(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Settings:
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                raise ConfigError(name, options[name], f"unknown option; known: {', '.join(sorted(known))}")
        merged = {**connection_options_from_env(environ), **options}
        settings = cls(**merged)
        settings.connection_resolver()  # validates toa / toa_peers now, not on the first request
        return settings

    def connection_resolver(self) -> ConnectionResolver:
        from .connection import DEFAULT_TOA_PEERS, ConnectionResolver

        if not isinstance(self.toa, bool):
            raise ConfigError("toa", self.toa, "expected True or False")
        peers = DEFAULT_TOA_PEERS if self.toa_peers is None else self.toa_peers
        return ConnectionResolver(toa=self.toa, toa_peers=peers)
