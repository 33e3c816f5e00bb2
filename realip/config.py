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
                                      ``x-real-ip``, ``single:<header>``,
                                      ``cloudflare``, ``cloudfront``,
                                      ``fastly``, ...)
``REALIP_ON_FAILURE``                 ``on_failure`` (``keep`` / ``reject``)
``REALIP_FORWARDED_PROTO``            ``forwarded_proto`` (on/off)
``REALIP_FORWARDED_HOST``             ``forwarded_host`` (on/off)
``REALIP_FORWARDED_PORT``             ``forwarded_port`` (on/off)
``REALIP_FORWARDED_PREFIX``           ``forwarded_prefix`` (on/off)
``REALIP_DOWNSTREAM_HEADERS``         ``downstream_headers`` (on/off)
``REALIP_STRIP_UNTRUSTED_HEADERS``    ``strip_untrusted_headers`` (on/off)
``REALIP_TRUST_UNIX_SOCKET_PEERS``    ``trust_unix_socket_peers`` (on/off)
``REALIP_TRUST_ALL_PEERS_UNSAFE``     ``trust_all_peers_unsafe`` (on/off)
``REALIP_TOA``                        ``toa`` (on/off)
``REALIP_TOA_PEERS``                  ``toa_peers`` (comma-separated)
``REALIP_TOA_VTOA_METADATA``          ``toa_vtoa_metadata`` (on/off): Alibaba vtoa's
                                      virtual server on each answer
``REALIP_PROXY_PROTOCOL``             server integration only: read PROXY headers
``REALIP_PROXY_PROTOCOL_PEERS``       who may (and must) send them
``REALIP_PROXY_PROTOCOL_TIMEOUT``     seconds to send the header (default 5)
``REALIP_PROXY_PROTOCOL_OTHERS``      ``close`` (default) / ``serve`` other peers
====================================  ==========================================
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .address import TrustedNetworks, parse_networks
from .errors import ConfigError
from .strategies import Strategy, strategy_from_name

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "Settings",
    "connection_options_from_env",
    "options_from_env",
    "parse_bool",
    "unknown_variables",
]

#: Every ``REALIP_*`` variable realip reads (the table above, and the named-range cache).
ENVIRONMENT_VARIABLES: Final = (
    "REALIP_TRUSTED_PROXIES",
    "REALIP_STRATEGY",
    "REALIP_ON_FAILURE",
    "REALIP_FORWARDED_PROTO",
    "REALIP_FORWARDED_HOST",
    "REALIP_FORWARDED_PORT",
    "REALIP_FORWARDED_PREFIX",
    "REALIP_DOWNSTREAM_HEADERS",
    "REALIP_STRIP_UNTRUSTED_HEADERS",
    "REALIP_TRUST_UNIX_SOCKET_PEERS",
    "REALIP_TRUST_ALL_PEERS_UNSAFE",
    "REALIP_TOA",
    "REALIP_TOA_PEERS",
    "REALIP_TOA_VTOA_METADATA",
    "REALIP_PROXY_PROTOCOL",
    "REALIP_PROXY_PROTOCOL_PEERS",
    "REALIP_PROXY_PROTOCOL_TIMEOUT",
    "REALIP_PROXY_PROTOCOL_OTHERS",
    "REALIP_RANGES_DIR",
)
#: Prefixes of families of variables (one per provider name).
_VARIABLE_PREFIXES: Final = ("REALIP_RANGES_URL_",)
_reported_unknown: set[str] = set()


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``REALIP_*`` variables realip does not read, each with the likely intended name (or ``None``)."""
    env = os.environ if environ is None else environ
    found = []
    for name in sorted(env):
        if name.startswith("REALIP_") and name not in ENVIRONMENT_VARIABLES and not name.startswith(_VARIABLE_PREFIXES):
            # Matched on what follows the shared prefix, which would otherwise make every name look close.
            close = difflib.get_close_matches(name[7:], [v[7:] for v in ENVIRONMENT_VARIABLES], n=1, cutoff=0.6)
            found.append((name, "REALIP_" + close[0] if close else None))
    return found


def _report_unknown_variables(env: Mapping[str, str]) -> None:
    """Warn, once per name and process, about a ``REALIP_*`` variable that does nothing."""
    for name, close in unknown_variables(env):
        if name in _reported_unknown:
            continue
        _reported_unknown.add(name)
        hint = f"; did you mean {close}?" if close else f"; known: {', '.join(ENVIRONMENT_VARIABLES)}"
        logging.getLogger("realip").warning("realip: %s is not a realip setting and does nothing%s", name, hint)


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
    _report_unknown_variables(env)
    options: dict[str, Any] = {}
    if "REALIP_TRUSTED_PROXIES" in env:
        options["trusted_proxies"] = _networks(env["REALIP_TRUSTED_PROXIES"], "REALIP_TRUSTED_PROXIES", env)
    if "REALIP_TOA" in env:
        options["toa"] = parse_bool(env["REALIP_TOA"], option="REALIP_TOA")
    if "REALIP_TOA_VTOA_METADATA" in env:
        options["toa_vtoa_metadata"] = parse_bool(env["REALIP_TOA_VTOA_METADATA"], option="REALIP_TOA_VTOA_METADATA")
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


def _networks(value: str, option: str, env: Mapping[str, str] | None = None) -> str:
    unsafe = "REALIP_TRUST_ALL_PEERS_UNSAFE"
    everyone = env is not None and parse_bool(env.get(unsafe, "off"), option=unsafe)
    parse_networks(value, option=option, allow_everyone=everyone)  # validate here, naming the variable
    return value


#: option -> (environment variable, parser)
_BOOL_OPTIONS = (
    "forwarded_proto",
    "forwarded_host",
    "forwarded_port",
    "forwarded_prefix",
    "downstream_headers",
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
    if "REALIP_STRATEGY" in env:
        options["strategy"] = strategy_from_name(env["REALIP_STRATEGY"], option="REALIP_STRATEGY")
    if "REALIP_ON_FAILURE" in env:
        options["on_failure"] = _on_failure(env["REALIP_ON_FAILURE"], "REALIP_ON_FAILURE")
    return options


def _on_failure(value: object, option: str) -> Literal["keep", "reject"]:
    if value == "keep":
        return "keep"
    if value == "reject":
        return "reject"
    raise ConfigError(option, value, "expected 'keep' (use the last trusted hop) or 'reject' (answer 400)")


#: The networks shared Huawei Cloud ELB instances connect to backends from
#: (100.125.0.0/16; some regions also 100.126.0.0/16). Both lie in the shared
#: address space of RFC 6598, which is not routed on the internet, so trusting
#: them by default does not let an internet client choose its address. A
#: dedicated ELB connects from the backend subnet: name it in ``toa_peers``.
DEFAULT_TOA_PEERS: Final = ("100.125.0.0/16", "100.126.0.0/16")

#: Every option of the middlewares, with its default.
_DEFAULTS: Final[dict[str, Any]] = {
    "trusted_proxies": (),
    "strategy": None,
    "on_failure": "keep",
    "forwarded_proto": False,
    "forwarded_host": False,
    "forwarded_port": False,
    "forwarded_prefix": False,
    "downstream_headers": False,
    "strip_untrusted_headers": True,
    "trust_unix_socket_peers": False,
    "trust_all_peers_unsafe": False,
    "toa": True,
    "toa_peers": None,
    "toa_vtoa_metadata": False,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated options of one middleware. Built once, at start-up, by ``Settings.build()``.

    Options passed in code win over ``REALIP_*`` variables, which win over the
    defaults. An unknown option or a bad value raises :class:`~realip.ConfigError`
    naming it. See :class:`realip.RealIPMiddleware` for what each one trusts.
    The server integrations build their :class:`~realip.connection.ConnectionResolver`
    from the same object (``ConnectionResolver.from_settings``), so no option
    can act in one and be dropped in the other.
    """

    #: The proxies whose headers are read: the ``trusted_proxies`` given, and the
    #: networks a strategy trusts itself (a CDN strategy's ranges).
    trusted_proxies: TrustedNetworks
    strategy: Strategy | None
    on_failure: Literal["keep", "reject"]
    #: The scheme from a trusted proxy's ``X-Forwarded-Proto`` (or ``Forwarded proto=``).
    forwarded_proto: bool
    #: The host from a trusted proxy's ``X-Forwarded-Host`` (or ``Forwarded host=``).
    forwarded_host: bool
    #: The port the client connected to, from a trusted proxy's ``X-Forwarded-Port``.
    forwarded_port: bool
    #: The path prefix, from a trusted proxy's ``X-Forwarded-Prefix``.
    forwarded_prefix: bool
    #: Rewrite the forwarding header read (and ``X-Real-IP``) to hold only what was
    #: believed, for libraries that read it themselves (:mod:`realip.downstream`).
    downstream_headers: bool
    strip_untrusted_headers: bool
    trust_unix_socket_peers: bool
    trust_all_peers_unsafe: bool
    toa: bool
    toa_peers: TrustedNetworks
    #: Ask Alibaba's vtoa module for each connection's virtual server (docs/vendors/alibaba.md).
    toa_vtoa_metadata: bool
    #: This middleware's own say on TOA answers a server integration made: ``None``
    #: when neither ``toa`` nor ``toa_peers`` was given, ``False`` for ``toa=False``,
    #: else the ``toa_peers`` networks.
    toa_filter: TrustedNetworks | Literal[False] | None

    @classmethod
    def build(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Settings:
        for name in options:
            if name not in _DEFAULTS:
                close = difflib.get_close_matches(name, _DEFAULTS, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ConfigError(name, options[name], f"unknown option; {hint}known: {', '.join(sorted(_DEFAULTS))}")
        merged = {**_DEFAULTS, **options_from_env(environ), **options}
        for name in (*_BOOL_OPTIONS, "toa", "toa_vtoa_metadata"):
            if not isinstance(merged[name], bool):
                raise ConfigError(name, merged[name], "expected True or False")
        everyone = merged["trust_all_peers_unsafe"]
        trusted = TrustedNetworks.parse(merged["trusted_proxies"], option="trusted_proxies", allow_everyone=everyone)
        given_peers = merged["toa_peers"]
        toa_peers = TrustedNetworks.parse(DEFAULT_TOA_PEERS if given_peers is None else given_peers, option="toa_peers")
        if not merged["toa"]:
            toa_filter: TrustedNetworks | Literal[False] | None = False
        else:
            toa_filter = None if given_peers is None else toa_peers
        strategy = _strategy(merged["strategy"], bool(trusted) or everyone)
        ranges = getattr(strategy, "ranges", None)
        if isinstance(ranges, TrustedNetworks):  # a CDN strategy: the CDN may connect directly
            trusted = TrustedNetworks(trusted.networks + ranges.networks)
        return cls(
            trusted_proxies=trusted,
            strategy=strategy,
            on_failure=_on_failure(merged["on_failure"], "on_failure"),
            forwarded_proto=merged["forwarded_proto"],
            forwarded_host=merged["forwarded_host"],
            forwarded_port=merged["forwarded_port"],
            forwarded_prefix=merged["forwarded_prefix"],
            downstream_headers=merged["downstream_headers"],
            strip_untrusted_headers=merged["strip_untrusted_headers"],
            trust_unix_socket_peers=merged["trust_unix_socket_peers"],
            trust_all_peers_unsafe=everyone,
            toa=merged["toa"],
            toa_peers=toa_peers,
            toa_vtoa_metadata=merged["toa_vtoa_metadata"],
            toa_filter=toa_filter,
        )


def _strategy(strategy: object, trusting: bool) -> Strategy | None:
    if strategy is None:
        # Trusting proxies means reading what they add: X-Forwarded-For by default.
        return strategy_from_name("x-forwarded-for") if trusting else None
    if isinstance(strategy, str):
        return strategy_from_name(strategy, option="strategy")
    if not (isinstance(getattr(strategy, "header", None), str) and callable(getattr(strategy, "decide", None))):
        raise ConfigError("strategy", strategy, "expected a strategy (realip.strategies) or its name")
    client_header = getattr(strategy, "client_header", None)
    if client_header is not None and not isinstance(client_header, str):
        raise ConfigError("strategy", strategy, "its client_header must be a header name (a str)")
    return strategy  # type: ignore[return-value]
