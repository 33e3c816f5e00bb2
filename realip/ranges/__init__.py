"""Named ranges: ``"cloudflare"`` instead of a list of networks in ``trusted_proxies``.

Names (:func:`known_names`):

* provider lists, the addresses a provider's proxies connect from:
  ``cloudflare``, ``cloudfront`` (CloudFront's *origin-facing* ranges),
  ``fastly``, ``google-cloud-lb`` (Google Front Ends) and ``huawei-elb``;
* built-in local sets, fixed by RFCs: ``loopback`` (``127.0.0.0/8``,
  ``::1/128``) and ``private`` (RFC 1918 ``10/8``, ``172.16/12``,
  ``192.168/16`` and RFC 4193 ``fc00::/7``). Nothing implies them: trusting
  ``cloudflare`` does not trust ``loopback``.

What is trusted, and from where: each provider list ships inside the package as
a dated file (``realip/ranges/data/<name>.txt``, with its source URL and date).
``realip ranges update`` fetches the refreshable ones again into a cache
directory (:func:`cache_dir`); a cache copy is used instead of the shipped one
unless the shipped one is newer (after an upgrade of realip). Both are checked
the same way when read (:func:`realip.ranges.lists.check_networks`: no whole
address family, nothing wider than /8 or /24, no loopback, private, link-local or
IPv4-embedding space); a cache copy that cannot be read or fails the check is
ignored with a warning in the log and in :func:`report`, and the shipped copy is
used. A shipped copy that fails the check raises :class:`RangesError`.

Lists are read once per process (at start-up, when the middleware is built) and
kept: nothing here touches the network, and nothing is read per request. A
refreshed cache is seen by processes started afterwards (restart or reload the
workers). See ``docs/providers/index.md``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from .lists import (
    BUILTIN,
    PROVIDERS,
    Network,
    RangesError,
    UnknownRangeError,
    format_timestamp,
    known_names,
    normalise_name,
    parse_file,
)

__all__ = [
    "RangeList",
    "RangeStatus",
    "RangesError",
    "UnknownRangeError",
    "cache_dir",
    "clear_cache",
    "known_names",
    "load",
    "networks",
    "report",
    "shipped_path",
]

logger: Final = logging.getLogger("realip")

Origin = Literal["cache", "shipped", "built-in"]


@dataclass(frozen=True)
class RangeList:
    """One named list as loaded: its networks and where they came from.

    ``origin`` is ``"cache"`` (fetched by ``realip ranges update``),
    ``"shipped"`` (the copy inside the package) or ``"built-in"`` (``loopback``,
    ``private``: no file, no date). ``sources`` are the URLs the networks were
    published at (the mirror's, if one was used), ``fetched`` when they were
    taken (UTC; ``None`` for built-in sets), ``path`` the file read. ``notes``
    say why a cache copy was passed over, if one was.
    """

    name: str
    networks: tuple[Network, ...]
    origin: Origin
    sources: tuple[str, ...]
    fetched: datetime | None
    path: Path | None
    refreshable: bool
    max_age_days: int | None
    notes: tuple[str, ...] = field(default=())

    @property
    def source(self) -> str:
        """The source URL(s), space-separated (Cloudflare publishes two)."""
        return " ".join(self.sources)

    @property
    def age_days(self) -> float | None:
        """Days since ``fetched`` (never negative), or ``None`` for a built-in set."""
        return _age_days(self.fetched, datetime.now(timezone.utc))

    @property
    def stale(self) -> bool:
        """Older than ``max_age_days``: :func:`report` warns about it."""
        age = self.age_days
        return age is not None and self.max_age_days is not None and age > self.max_age_days


def _age_days(fetched: datetime | None, now: datetime) -> float | None:
    if fetched is None:
        return None
    return max(0.0, (now - fetched).total_seconds() / 86400)


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The directory ``realip ranges update`` writes to and :func:`load` prefers.

    ``$REALIP_RANGES_DIR``, else ``$XDG_CACHE_HOME/realip/ranges`` (an absolute
    ``XDG_CACHE_HOME`` only, as the XDG spec says), else
    ``~/.cache/realip/ranges``; ``None`` when there is no home directory either.
    ``~`` is the home of the user running the process: set ``REALIP_RANGES_DIR``
    to one directory readable by the application's user when the update runs as
    another user (cron as root, gunicorn workers as ``www-data``).
    """
    env = os.environ if environ is None else environ
    explicit = env.get("REALIP_RANGES_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "realip" / "ranges"
    try:
        home = Path.home()
    except (RuntimeError, KeyError, OSError):
        return None
    return home / ".cache" / "realip" / "ranges"


def shipped_path(name: str) -> Path:
    """Where the copy of ``name`` inside the package is."""
    return Path(str(resources.files(__name__).joinpath("data", f"{name}.txt")))


_memo: dict[tuple[str, Path | None], RangeList] = {}
_memo_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every list read so far in this process: the next :func:`load` reads the files again."""
    with _memo_lock:
        _memo.clear()


def load(name: str, *, directory: Path | str | None = None) -> RangeList:
    """The list called ``name`` (case and surrounding spaces ignored), read once per process.

    ``directory`` is the cache directory to look in, by default :func:`cache_dir`.
    Raises :class:`UnknownRangeError` (a :class:`KeyError`) for a name that is
    not in :func:`known_names`, and :class:`RangesError` when the shipped copy
    itself is broken (an installation problem).
    """
    key = normalise_name(name)
    if key in BUILTIN:
        built, what = BUILTIN[key]
        return RangeList(key, built, "built-in", (what,), None, None, False, None)
    folder = Path(directory) if directory is not None else cache_dir()
    with _memo_lock:
        found = _memo.get((key, folder))
        if found is None:
            found = _memo[(key, folder)] = _read(key, folder)
    return found


def networks(name: str) -> tuple[Network, ...]:
    """The networks of the list called ``name``: what ``trusted_proxies=["<name>"]`` trusts.

    Raises :class:`UnknownRangeError` (a :class:`KeyError` whose message lists the
    known names) for an unknown name; never returns ``None``.
    """
    return load(name).networks


def _read(name: str, folder: Path | None) -> RangeList:
    provider = PROVIDERS[name]
    path = shipped_path(name)
    try:
        shipped = parse_file(path.read_text(encoding="utf-8"), name=name)
    except (OSError, UnicodeDecodeError, RangesError) as exc:
        raise RangesError(f"realip's shipped list {name!r} ({path}) is broken: {exc}") from None
    notes: list[str] = []
    if folder is not None:
        cached_path = folder / f"{name}.txt"
        try:
            text = cached_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            notes.append(f"cache copy {cached_path} not readable ({type(exc).__name__}: {exc}); using the shipped copy")
        else:
            try:
                cached = parse_file(text, name=name)
            except RangesError as exc:
                notes.append(f"cache copy {cached_path} ignored ({exc}); using the shipped copy")
            else:
                if cached.fetched >= shipped.fetched:
                    return RangeList(
                        name,
                        cached.networks,
                        "cache",
                        cached.sources,
                        cached.fetched,
                        cached_path,
                        provider.refreshable,
                        provider.max_age_days,
                    )
                notes.append(
                    f"cache copy {cached_path} (fetched {format_timestamp(cached.fetched)}) is older than the "
                    "shipped copy; using the shipped copy"
                )
    for note in notes:
        logger.warning("realip: named range %s: %s", name, note)
    return RangeList(
        name,
        shipped.networks,
        "shipped",
        shipped.sources,
        shipped.fetched,
        path,
        provider.refreshable,
        provider.max_age_days,
        tuple(notes),
    )


# ---- realip doctor -------------------------------------------------------------------

Status = Literal["ok", "info", "warn", "problem"]


@dataclass(frozen=True)
class RangeStatus:
    """One line of :func:`report`, shaped like a ``realip doctor`` finding.

    ``status`` is ``"ok"``, ``"warn"`` (older than its maximum age, or a cache
    copy was passed over) or ``"problem"`` (the list cannot be loaded);
    ``summary`` one line; ``advice`` what to do ("" when nothing); ``data`` the
    facts, JSON-serialisable.
    """

    name: str
    status: Status
    summary: str
    advice: str
    data: dict[str, Any]


def report(
    names: Iterable[str] | None = None, *, directory: Path | str | None = None, now: datetime | None = None
) -> list[RangeStatus]:
    """Where each list comes from and how old it is, with a warning past its maximum age.

    ``names`` defaults to every known name (pass the ones a deployment uses).
    Provider lists from a CDN (``cloudflare``, ``cloudfront``, ``fastly``) warn
    past 30 days; the hand-kept load-balancer lists (``google-cloud-lb``,
    ``huawei-elb``) past 365 days. Reads the lists like :func:`load` (and
    through the same per-process cache); never raises for a list that cannot
    be read: that becomes a ``"problem"`` line.
    """
    when = now if now is not None else datetime.now(timezone.utc)
    lines = []
    for raw in known_names() if names is None else names:
        try:
            ranges = load(raw, directory=directory)
        except (UnknownRangeError, RangesError) as exc:
            lines.append(RangeStatus(str(raw), "problem", f"{raw}: {exc}", "", {"name": str(raw), "error": str(exc)}))
            continue
        lines.append(_status(ranges, when))
    return lines


def _status(ranges: RangeList, now: datetime) -> RangeStatus:
    age = _age_days(ranges.fetched, now)
    data: dict[str, Any] = {
        "name": ranges.name,
        "origin": ranges.origin,
        "networks": len(ranges.networks),
        "sources": list(ranges.sources),
        "path": str(ranges.path) if ranges.path else None,
        "fetched": format_timestamp(ranges.fetched) if ranges.fetched else None,
        "age_days": round(age, 1) if age is not None else None,
        "max_age_days": ranges.max_age_days,
        "refreshable": ranges.refreshable,
        "notes": list(ranges.notes),
    }
    count = f"{len(ranges.networks)} network{'s' if len(ranges.networks) != 1 else ''}"
    if ranges.origin == "built-in":
        return RangeStatus(ranges.name, "ok", f"{ranges.name}: {count}, built in ({ranges.source})", "", data)
    assert ranges.fetched is not None and age is not None and ranges.max_age_days is not None
    where = "cache" if ranges.origin == "cache" else "copy shipped with realip"
    summary = f"{ranges.name}: {count} from the {where} ({ranges.path}), {format_timestamp(ranges.fetched)}, "
    summary += f"{age:.0f} days old"
    advice = []
    status: Status = "ok"
    if age > ranges.max_age_days:
        status = "warn"
        summary += f" (over {ranges.max_age_days})"
        if ranges.refreshable:
            advice.append(
                f"run `realip ranges update {ranges.name}` (from cron or a build step), into a cache directory "
                "the application's user can read (REALIP_RANGES_DIR, set for both)"
            )
        else:
            advice.append(f"no machine-readable list exists: check {ranges.source} and upgrade realip")
    if ranges.notes:
        status = "warn"
        advice.extend(ranges.notes)
    return RangeStatus(ranges.name, status, summary, "; ".join(advice), data)
