"""``--expect``: what the user says this host should have, checked against the
report.

Each expectation is a short list of requirements, read from the other checks'
findings the way a script would read ``--json``. A requirement that is met is
``ok``; one that is missing is a ``problem`` whose advice ends with the docs
page that fixes it, and the command then exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import ip_address
from typing import Any, Final

from ..address import TrustedNetworks
from ..config import parse_bool
from ..errors import ConfigError
from .model import Finding, Status

__all__ = ["EXPECTATIONS", "expectation_findings"]

#: Each expectation ``--expect`` takes, and what it requires.
EXPECTATIONS: Final[dict[str, str]] = {
    "nat64": (
        "behind a NAT64 load balancer (Huawei Cloud ELB with IPv6): a TOA module loaded and answering the NAT64 "
        "lookup, realip's shim compiled, REALIP_TOA not off, the app on an AF_INET listener (0.0.0.0:PORT, which "
        "keeps the load balancer visible) and no AF_INET6 listener of the app taking outside clients"
    ),
    "proxy": (
        "behind a reverse proxy or HTTP load balancer: REALIP_TRUSTED_PROXIES set and valid here; a reverse proxy "
        "running on this host should be trusted (127.0.0.1 or ::1)"
    ),
    "dual-stack": "net.ipv6.bindv6only = 0, and no [::] listener of the app refuses IPv4 clients",
}

_LOAD_MODULE: Final = "docs/toa.md#1-load-the-module-on-the-host"
_LISTEN_AF_INET: Final = "docs/toa.md#3-listen-on-ipv4-0000-not-"
_SHIM: Final = "docs/toa.md#how-nat64-with-toa-works"
_SERVER: Final = "docs/toa.md#4-run-the-server-with-realip"
_NAT64_BUILD: Final = "docs/toa-module.md#other-vendors-modules"
_ANSWERS: Final = "docs/toa-module.md#what-the-lookup-answers"
_TRUST_PROXY: Final = "docs/troubleshooting.md#uvicorn-shows-127001-or-the-proxys-address-for-every-client"
_CONFIG_ERROR: Final = "docs/troubleshooting.md#configerror-at-start-up"
_BINDV6ONLY: Final = "docs/servers.md#what-netipv6bindv6only-changes"
_V6ONLY: Final = "docs/troubleshooting.md#ipv4-clients-are-refused-ipv6-works"


def _result(
    expectation: str, requirement: str, met: bool, summary: str, advice: str = "", docs: str = "", **data: Any
) -> Finding:
    """One requirement: ``ok`` when met, else a ``problem`` that points at ``docs``."""
    status: Status = "ok" if met else "problem"
    if not met and docs:
        advice = f"{advice}; see {docs}" if advice else f"see {docs}"
    record = {"expectation": expectation, "requirement": requirement, "met": met, "docs": docs or None, **data}
    return Finding("expect", status, f"{expectation}: {summary}", advice if not met else "", record)


def _of(findings: Sequence[Finding], check: str) -> list[Finding]:
    return [finding for finding in findings if finding.check == check]


def _variable(findings: Sequence[Finding], name: str) -> dict[str, Any] | None:
    """The environment check's data about variable ``name``, if it is set."""
    return next((f.data for f in _of(findings, "environment") if f.data.get("variable") == name), None)


def _app_listeners(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """Data of the listeners that are not a reverse proxy's."""
    return [f.data for f in _of(findings, "listener") if "reverse_proxy" not in f.data]


#: Why the NAT64 lookup does not work, by what the live probe saw: (summary, advice, docs).
_LOOKUP_PROBLEMS: Final = {
    "no-module": (
        "no TOA module is loaded on this host (the live lookup answers ENOPROTOOPT): NAT64 clients appear as the "
        "load balancer",
        "build and load Huawei's elb-toa module (branch IPv6) on the host",
        _LOAD_MODULE,
    ),
    "no-lookup": (
        "a module named toa is loaded but has no NAT64 lookup (ENOPROTOOPT): NAT64 clients appear as the load balancer",
        "load a build with the lookup (Huawei elb-toa, branch IPv6)",
        _NAT64_BUILD,
    ),
    "unavailable": (
        "realip's TOA shim is not compiled, so realip cannot ask the module",
        "reinstall realip where a C compiler is available",
        _SHIM,
    ),
}


def _toa_lookup(findings: Sequence[Finding]) -> Finding:
    """The live probe found a module that answers the NAT64 lookup."""
    probe = next(iter(_of(findings, "toa_probe")), None)
    if probe is not None and probe.status == "ok":
        return _result("nat64", "toa_lookup", True, "the TOA module is loaded and answers the NAT64 lookup")
    seen = probe.data.get("status") if probe is not None else None
    if seen == "no-module" and probe is not None and probe.status == "warn":
        seen = "no-lookup"  # signs of a module, yet no answer: an IPv4-only build
    if seen in _LOOKUP_PROBLEMS:
        summary, advice, docs = _LOOKUP_PROBLEMS[seen]
        return _result("nat64", "toa_lookup", False, summary, advice, docs)
    shown = probe.summary if probe is not None else "no live probe"
    summary = f"the live TOA lookup did not answer as a working module does ({shown})"
    return _result("nat64", "toa_lookup", False, summary, "", _ANSWERS)


def _toa_enabled(findings: Sequence[Finding]) -> Finding:
    """``REALIP_TOA`` is not off (a bad value is the environment check's problem)."""
    toa = _variable(findings, "REALIP_TOA")
    try:
        enabled = toa is None or parse_bool(toa["value"], option="REALIP_TOA")
    except ConfigError:
        enabled = True
    if enabled:
        return _result("nat64", "toa_enabled", True, "realip asks the TOA module (REALIP_TOA is not off)")
    summary = f"REALIP_TOA={toa['value']!r} turns realip's TOA lookup off"  # type: ignore[index]
    return _result("nat64", "toa_enabled", False, summary, "unset REALIP_TOA (the default is on)", _SERVER)


def _nat64(findings: Sequence[Finding]) -> list[Finding]:
    results = [_toa_lookup(findings), _toa_enabled(findings)]
    outside_v4 = [
        f"{d['address']}:{d['port']}"
        for d in _app_listeners(findings)
        if d["family"] == "tcp" and d["scope"] in ("wildcard", "specific")
    ]
    results.append(
        _result(
            "nat64",
            "af_inet_listener",
            bool(outside_v4),
            f"the app listens on AF_INET ({', '.join(outside_v4[:4])}): the load balancer stays visible"
            if outside_v4
            else "no AF_INET listener (0.0.0.0:PORT) of the app takes outside clients, so the load balancer "
            "cannot reach the app on the family realip checks it on",
            "start the server on 0.0.0.0:PORT (run `realip doctor` while the app runs)",
            _LISTEN_AF_INET,
            listeners=outside_v4,
        )
    )
    nat64 = next(iter(_of(findings, "nat64")), None)
    exposed = list(nat64.data.get("af_inet6_listeners", [])) if nat64 is not None else []
    results.append(
        _result(
            "nat64",
            "no_af_inet6_listener",
            not exposed,
            "no AF_INET6 listener of the app takes outside clients"
            if not exposed
            else f"AF_INET6 listeners take outside clients ({', '.join(exposed[:4])}): there the module rewrites "
            "the peer and nobody can check who sent the option",
            "listen on 0.0.0.0 instead of [::]",
            _LISTEN_AF_INET,
            listeners=exposed,
        )
    )
    return results


def _proxy(findings: Sequence[Finding]) -> list[Finding]:
    results = []
    trusted = _variable(findings, "REALIP_TRUSTED_PROXIES")
    networks: TrustedNetworks | None = None
    if trusted is None or not trusted["value"].strip():
        results.append(
            _result(
                "proxy",
                "trusted_proxies",
                False,
                "REALIP_TRUSTED_PROXIES is not set here, so realip believes no forwarding header "
                "(unless the app passes trusted_proxies in code)",
                "set REALIP_TRUSTED_PROXIES to the addresses the proxies connect from, in the app's environment",
                _TRUST_PROXY,
            )
        )
    elif trusted.get("valid") is False:
        results.append(
            _result(
                "proxy",
                "trusted_proxies",
                False,
                f"REALIP_TRUSTED_PROXIES is not valid: {trusted.get('hint')}",
                "",
                _CONFIG_ERROR,
            )
        )
    else:
        results.append(
            _result("proxy", "trusted_proxies", True, f"REALIP_TRUSTED_PROXIES={trusted['value']!r} is set and valid")
        )
        try:
            networks = TrustedNetworks.parse(trusted["value"], option="REALIP_TRUSTED_PROXIES")
        except ConfigError:
            networks = None
    local = sorted({f.data["reverse_proxy"] for f in _of(findings, "listener") if "reverse_proxy" in f.data})
    if local and networks is not None:
        names = ", ".join(local)
        loopback = [text for text in ("127.0.0.1", "::1") if ip_address(text) in networks]
        if loopback:
            summary = f"the reverse proxy on this host ({names}) connects from loopback, which is trusted"
            results.append(_result("proxy", "local_proxy_trusted", True, summary, local_proxies=local))
        else:
            # It may connect to the app from another address of this host: worth a look, not a failure.
            results.append(
                Finding(
                    "expect",
                    "warn",
                    f"proxy: a reverse proxy runs on this host ({names}) but neither 127.0.0.1 nor ::1 is in "
                    "REALIP_TRUSTED_PROXIES",
                    f"add them if the proxy connects to the app over loopback; see {_TRUST_PROXY}",
                    {
                        "expectation": "proxy",
                        "requirement": "local_proxy_trusted",
                        "met": None,
                        "docs": _TRUST_PROXY,
                        "local_proxies": local,
                    },
                )
            )
    return results


def _dual_stack(findings: Sequence[Finding]) -> list[Finding]:
    results = []
    bindv6only = next(iter(_of(findings, "bindv6only")), None)
    value = bindv6only.data.get("value") if bindv6only is not None else None
    results.append(
        _result(
            "dual-stack",
            "bindv6only",
            value == 0,
            "net.ipv6.bindv6only = 0: [::] listeners take IPv4 clients too"
            if value == 0
            else f"net.ipv6.bindv6only is {value if value is not None else 'not readable'}: [::] listeners "
            "are IPv6-only unless the server clears IPV6_V6ONLY",
            "sysctl -w net.ipv6.bindv6only=0 (and in /etc/sysctl.d/ for the next boot), or listen on 0.0.0.0 too",
            _BINDV6ONLY,
            value=value,
        )
    )
    refused = [
        f"[{d['address']}]:{d['port']}"
        for d in _app_listeners(findings)
        if d["family"] == "tcp6" and d["scope"] == "wildcard" and d.get("accepts_ipv4") is False
    ]
    results.append(
        _result(
            "dual-stack",
            "ipv4_accepted",
            not refused,
            "no [::] listener of the app refuses IPv4"
            if not refused
            else f"[::] listeners refuse IPv4 clients (IPV6_V6ONLY): {', '.join(refused[:4])}",
            "listen on 0.0.0.0 as well, or have the server clear IPV6_V6ONLY",
            _V6ONLY,
            listeners=refused,
        )
    )
    return results


_CHECKERS: Final[dict[str, Callable[[Sequence[Finding]], list[Finding]]]] = {
    "nat64": _nat64,
    "proxy": _proxy,
    "dual-stack": _dual_stack,
}


def expectation_findings(expect: Sequence[str], findings: Sequence[Finding]) -> list[Finding]:
    """The requirements of each expectation in ``expect`` (names of :data:`EXPECTATIONS`),
    decided from the other checks' ``findings``."""
    results = []
    for name in dict.fromkeys(expect):
        if name not in _CHECKERS:
            raise ValueError(f"unknown expectation {name!r}; known: {', '.join(EXPECTATIONS)}")
        results += _CHECKERS[name](findings)
    return results
