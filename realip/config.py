"""Configuration from the environment, for deployments that cannot edit code.

Every option of the middlewares and of the server integrations can be given as
a ``REALIP_*`` variable. The same validation applies as in code, and a bad
value fails at start-up with :class:`~realip.ConfigError` naming the variable.

====================================  ==========================================
variable                              option
====================================  ==========================================
``REALIP_TRUSTED_PROXIES``            ``trusted_proxies`` (comma-separated)
``REALIP_STRATEGY``                   ``strategy`` (``x-forwarded-for``,
                                      ``forwarded``, ``x-forwarded-for:2``,
                                      ``x-real-ip``, ``single:<header>``, ...)
``REALIP_ON_FAILURE``                 ``on_failure`` (``keep`` / ``reject``)
``REALIP_FORWARDED_PROTO``            ``forwarded_proto`` (on/off)
``REALIP_FORWARDED_HOST``             ``forwarded_host`` (on/off)
``REALIP_STRIP_UNTRUSTED_HEADERS``    ``strip_untrusted_headers`` (on/off)
``REALIP_TRUST_UNIX_SOCKET_PEERS``    ``trust_unix_socket_peers`` (on/off)
``REALIP_TRUST_ALL_PEERS_UNSAFE``     ``trust_all_peers_unsafe`` (on/off)
``REALIP_TOA``                        ``toa`` (on/off)
``REALIP_TOA_PEERS``                  ``toa_peers`` (comma-separated)
``REALIP_PROXY_PROTOCOL``             server integration only: read PROXY headers
``REALIP_PROXY_PROTOCOL_PEERS``       who may (and must) send them
``REALIP_PROXY_PROTOCOL_TIMEOUT``     seconds to send the header (default 5)
``REALIP_PROXY_PROTOCOL_OTHERS``      ``close`` (default) / ``serve`` other peers
====================================  ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .connection import ConnectionResolver

__all__ = ["Settings", "connection_options_from_env", "options_from_env", "parse_bool"]

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
    if "REALIP_PROXY_PROTOCOL" in env:
        options["proxy_protocol"] = parse_bool(env["REALIP_PROXY_PROTOCOL"], option="REALIP_PROXY_PROTOCOL")
    if "REALIP_PROXY_PROTOCOL_PEERS" in env:
        options["proxy_protocol_peers"] = _networks(env["REALIP_PROXY_PROTOCOL_PEERS"], "REALIP_PROXY_PROTOCOL_PEERS")
    if "REALIP_PROXY_PROTOCOL_TIMEOUT" in env:
        value = env["REALIP_PROXY_PROTOCOL_TIMEOUT"]
        try:
            options["proxy_protocol_timeout"] = float(value)
        except ValueError:
            raise ConfigError("REALIP_PROXY_PROTOCOL_TIMEOUT", value, "expected seconds") from None
    if "REALIP_PROXY_PROTOCOL_OTHERS" in env:
        options["proxy_protocol_others"] = env["REALIP_PROXY_PROTOCOL_OTHERS"]
    return options


def _networks(value: str, option: str) -> str:
    from .address import parse_networks

    parse_networks(value, option=option)  # validate here, naming the variable
    return value


#: option -> (environment variable, parser)
_BOOL_OPTIONS = (
    "forwarded_proto",
    "forwarded_host",
    "strip_untrusted_headers",
    "trust_unix_socket_peers",
    "trust_all_peers_unsafe",
)


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every ``REALIP_*`` variable that is set, as keyword options (validated later)."""
    env = os.environ if environ is None else environ
    options = connection_options_from_env(env)
    for name in [n for n in options if n.startswith("proxy_protocol")]:
        del options[name]  # a server-integration setting: the middlewares see the result
    for name in _BOOL_OPTIONS:
        variable = "REALIP_" + name.upper()
        if variable in env:
            options[name] = parse_bool(env[variable], option=variable)
    if "REALIP_TRUSTED_PROXIES" in env:
        options["trusted_proxies"] = _networks(env["REALIP_TRUSTED_PROXIES"], "REALIP_TRUSTED_PROXIES")
    if "REALIP_STRATEGY" in env:
        from .strategies import strategy_from_name

        options["strategy"] = strategy_from_name(env["REALIP_STRATEGY"], option="REALIP_STRATEGY")
    if "REALIP_ON_FAILURE" in env:
        options["on_failure"] = _on_failure(env["REALIP_ON_FAILURE"], "REALIP_ON_FAILURE")
    return options


def _on_failure(value: object, option: str) -> str:
    if value not in ("keep", "reject"):
        raise ConfigError(option, value, "expected 'keep' (use the last trusted hop) or 'reject' (answer 400)")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Settings:
    """The validated options of one middleware. Built once, at start-up.

    Options passed in code win over ``REALIP_*`` variables, which win over the
    defaults. An unknown option or a bad value raises :class:`~realip.ConfigError`
    naming it. See :class:`realip.RealIPMiddleware` for what each one trusts.
    """

    trusted_proxies: Any = ()
    strategy: Any = None
    on_failure: str = "keep"
    forwarded_proto: bool = False
    forwarded_host: bool = False
    strip_untrusted_headers: bool = True
    trust_unix_socket_peers: bool = False
    trust_all_peers_unsafe: bool = False
    toa: bool = True
    toa_peers: Any = None  # None: DEFAULT_TOA_PEERS

    @classmethod
    def build(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Settings:
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                raise ConfigError(name, options[name], f"unknown option; known: {', '.join(sorted(known))}")
        merged = {**options_from_env(environ), **options}
        settings = cls(**merged)
        settings._validate()
        return settings

    def _validate(self) -> None:
        from .address import TrustedNetworks

        for name in (*_BOOL_OPTIONS, "toa"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "expected True or False")
        _on_failure(self.on_failure, "on_failure")
        object.__setattr__(
            self, "trusted_proxies", TrustedNetworks.parse(self.trusted_proxies, option="trusted_proxies")
        )
        object.__setattr__(self, "strategy", self._strategy())
        self.connection_resolver()  # validates toa_peers now, not on the first request

    def _strategy(self) -> Any:
        from .strategies import strategy_from_name

        strategy = self.strategy
        if strategy is None:
            # Trusting proxies means reading what they add: X-Forwarded-For by default.
            return (
                strategy_from_name("x-forwarded-for") if (self.trusted_proxies or self.trust_all_peers_unsafe) else None
            )
        if isinstance(strategy, str):
            return strategy_from_name(strategy, option="strategy")
        if not (isinstance(getattr(strategy, "header", None), str) and callable(getattr(strategy, "decide", None))):
            raise ConfigError("strategy", strategy, "expected a strategy (realip.strategies) or its name")
        return strategy

    def connection_resolver(self) -> ConnectionResolver:
        from .connection import DEFAULT_TOA_PEERS, ConnectionResolver

        peers = DEFAULT_TOA_PEERS if self.toa_peers is None else self.toa_peers
        return ConnectionResolver(toa=self.toa, toa_peers=peers)
