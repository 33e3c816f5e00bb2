"""The named ranges this environment uses (``cloudflare``, ``huawei-elb``, ...):
where each list was read from and how old it is.

The names are those in ``REALIP_TRUSTED_PROXIES`` and the CDN a CDN strategy
(``REALIP_STRATEGY=cloudflare``) trusts. Each becomes one finding of the
``environment`` check, from ``realip.ranges.report()``: ``ok``, ``warn`` past
the list's maximum age (30 days for the CDN lists, 365 for the hand-kept
load-balancer lists) or when a cache copy was passed over, ``problem`` when the
list cannot be read. The lists are read from the cache directory of the checked
environment (``REALIP_RANGES_DIR``, ...), as the app would read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from ..ranges import cache_dir, known_names, report
from ..strategies import CDN_CLIENT_HEADERS
from .model import Finding

__all__ = ["range_findings", "range_names"]


def range_names(environ: Mapping[str, str]) -> list[str]:
    """The known range names ``environ`` uses, in the order they appear (no repeats).

    Unknown names are left out: the ``environment`` check reports them with
    the error realip would fail with.
    """
    known = set(known_names())
    names = []
    for item in environ.get("REALIP_TRUSTED_PROXIES", "").split(","):
        text = item.strip().lower()
        if text in known:
            names.append(text)
    strategy = environ.get("REALIP_STRATEGY", "").strip().lower()
    if strategy in CDN_CLIENT_HEADERS:  # a CDN strategy trusts its CDN's range itself
        names.append(strategy)
    return list(dict.fromkeys(names))


def range_findings(environ: Mapping[str, str], *, now: datetime | None = None) -> list[Finding]:
    """One ``environment`` finding per named range ``environ`` uses (none when it uses none)."""
    names = range_names(environ)
    if not names:
        return []
    findings = []
    for line in report(names, directory=cache_dir(environ), now=now):
        data = {"range": line.name, **line.data}
        findings.append(Finding("environment", line.status, f"named range {line.summary}", line.advice, data))
    return findings
