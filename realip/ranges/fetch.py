"""``realip ranges update``: fetch the providers' published lists again, check them, write them atomically.

The only part of realip that uses the network, and only when asked to (a cron
job, a container build step): applications never import it. Standard library
only (:mod:`urllib.request`).

What is trusted: the provider's document at its published HTTPS URL (or a
mirror named with ``--url KEY=URL`` / ``REALIP_RANGES_URL_<KEY>``), as far as it
passes the checks here. Certificates are verified (the system's defaults), an
``https`` URL may not redirect to plain ``http``, and only ``http`` and
``https`` URLs are fetched. An answer is refused whole when it is not HTTP 200,
is larger than ``max_bytes`` (5 MiB by default), takes longer than
``timeout`` (to connect, and in all: a slow trickle counts), does not parse in
the provider's own format, holds an entry that is not a network
(``strict=True``: no host bits), an entry of the wrong IP version, or anything
:func:`realip.ranges.lists.check_networks` refuses (a whole address family,
wider than /8 or /24, loopback / private / link-local / IPv4-embedding space, no
entries or more than 10,000). A refused or failed fetch writes nothing: the
last good copy (cache or shipped) stays in use, and the result says why.

A good list is written as ``<dir>/<name>.txt`` with a header recording its
source URL(s) and the fetch time: to a temporary file in the same directory,
flushed and fsync'ed, made readable by everyone (``0644``: the list is public
and the application may run as another user), then renamed over the old copy
with :func:`os.replace`, so a reader sees the old file or the new one, never a
part of one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import stat
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Final

from .. import __version__
from . import cache_dir, clear_cache, load
from .lists import (
    AWS_SERVICE,
    PROVIDERS,
    Network,
    RangesError,
    Source,
    check_networks,
    format_timestamp,
    normalise_name,
    parse_file,
    parse_network,
    render_file,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BYTES",
    "FetchError",
    "UpdateResult",
    "UsageError",
    "fetch",
    "parse_source",
    "refreshable_names",
    "resolve_urls",
    "source_keys",
    "update",
    "write_list",
]

#: Seconds allowed for each fetch (connecting, and the whole answer).
DEFAULT_TIMEOUT: Final = 30.0
#: The largest answer read (AWS's ip-ranges.json, the largest, is under 2 MiB).
MAX_BYTES: Final = 5 * 1024 * 1024
USER_AGENT: Final = f"realip/{__version__} (realip ranges update)"
_CHUNK: Final = 64 * 1024


class FetchError(RangesError):
    """A published list could not be fetched, or was refused by the checks."""


class UsageError(RangesError):
    """The request itself is wrong (unknown name, a list that cannot be refreshed, a bad URL or timeout)."""


@dataclass(frozen=True)
class UpdateResult:
    """What :func:`update` did for one list.

    ``ok``: a new copy was written to ``path``. Otherwise ``message`` says why
    not, and ``path`` is the copy still in use (cache or shipped).
    ``networks`` counts the networks now in use.
    """

    name: str
    ok: bool
    message: str
    path: Path | None
    networks: int


def refreshable_names() -> tuple[str, ...]:
    """The lists ``realip ranges update`` can fetch (those with a machine-readable publication)."""
    return tuple(name for name, provider in PROVIDERS.items() if provider.refreshable)


def source_keys() -> dict[str, Source]:
    """Every published document by its key (``cloudflare-v4``, ``cloudflare-v6``, ``cloudfront``, ``fastly``)."""
    return {source.key: source for provider in PROVIDERS.values() for source in provider.sources}


def _check_url(url: str, what: str) -> str:
    scheme = url.partition(":")[0].lower()
    if scheme not in ("http", "https") or "://" not in url or any(c.isspace() for c in url):
        raise UsageError(f"{what}: {url!r} is not an http:// or https:// URL")
    return url


def resolve_urls(overrides: Mapping[str, str] | Iterable[str] | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The URL to fetch for each source key: ``overrides`` (a mapping, or ``KEY=URL`` texts), else
    ``REALIP_RANGES_URL_<KEY>`` from ``environ``, else the provider's own URL.

    Raises :class:`UsageError` for an unknown key or a URL that is not http(s).
    """
    sources = source_keys()
    urls = {key: source.url for key, source in sources.items()}
    for key, source in sources.items():
        value = environ.get(source.variable, "").strip()
        if value:
            urls[key] = _check_url(value, source.variable)
    pairs: Iterable[tuple[str, str]]
    if overrides is None:
        pairs = ()
    elif isinstance(overrides, Mapping):
        pairs = overrides.items()
    else:
        pairs = []
        for text in overrides:
            key, sep, url = text.partition("=")
            if not sep:
                raise UsageError(f"--url {text!r}: expected KEY=URL, KEY one of {', '.join(sources)}")
            pairs.append((key, url))
    for key, url in pairs:
        name = key.strip().lower()
        if name not in sources:
            raise UsageError(f"--url {key}=...: unknown key {key!r}; keys: {', '.join(sources)}")
        urls[name] = _check_url(url.strip(), f"--url {name}")
    return urls


# ---- fetching -----------------------------------------------------------------------------


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), and never from https to plain http."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        old = req.full_url.partition(":")[0].lower()
        new = newurl.partition(":")[0].lower()
        if new not in ("http", "https") or (old == "https" and new == "http"):
            raise urllib.error.HTTPError(newurl, code, f"refused redirect from {old} to {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = MAX_BYTES) -> bytes:
    """The body of a ``200`` answer to ``GET url``, at most ``max_bytes``, within about ``timeout`` seconds.

    Raises :class:`FetchError` saying what went wrong.
    """
    _check_url(url, "url")
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
    opener = urllib.request.build_opener(_NoDowngrade)
    try:
        with opener.open(request, timeout=timeout) as response:
            if response.status != 200:
                raise FetchError(f"HTTP {response.status} {response.reason}, expected 200")
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > max_bytes:
                raise FetchError(f"answer of {int(length)} bytes, over the limit of {max_bytes}")
            body = bytearray()
            while True:
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"answer over the limit of {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out after {timeout:g} s (answer still arriving)")
            return bytes(body)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise FetchError(f"timed out after {timeout:g} s") from None
        raise FetchError(f"cannot fetch: {exc.reason}") from None
    except TimeoutError:
        raise FetchError(f"timed out after {timeout:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise FetchError(f"bad answer: {type(exc).__name__}: {exc}") from None


# ---- the providers' formats --------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise FetchError(f"not JSON: {exc}") from None


def _entries(document: Any, key: str) -> list[Any]:
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, list):
        raise FetchError(f"no {key!r} list in the JSON document")
    return value


def _network(value: object, version: int | None, where: str) -> Network:
    if not isinstance(value, str):
        raise FetchError(f"{where}: expected a network as a string, got {type(value).__name__}")
    try:
        return parse_network(value, version=version)
    except RangesError as exc:
        raise FetchError(f"{where}: {exc}") from None


def parse_source(source: Source, body: bytes) -> list[Network]:
    """The networks in one published document, read in its provider's own format.

    * ``text`` (Cloudflare): one network per line; blank lines and ``#`` comments skipped.
    * ``aws`` (``ip-ranges.json``): ``prefixes[].ip_prefix`` and
      ``ipv6_prefixes[].ipv6_prefix`` of the entries whose ``service`` is
      ``CLOUDFRONT_ORIGIN_FACING``.
    * ``fastly`` (``public-ip-list``): ``addresses`` (IPv4) and ``ipv6_addresses`` (IPv6).

    Raises :class:`FetchError` for a document that does not parse, an entry
    that is not a network of the expected version, or no networks at all. The
    networks are not yet checked against the bounds (:func:`check_networks`).
    """
    found: list[Network] = []
    if source.format == "text":
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FetchError(f"not UTF-8 text: {exc}") from None
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                found.append(_network(stripped, source.version, f"line {number}"))
    elif source.format == "aws":
        document = _json(body)
        for key, prefix, version in (("prefixes", "ip_prefix", 4), ("ipv6_prefixes", "ipv6_prefix", 6)):
            for index, entry in enumerate(_entries(document, key)):
                if not isinstance(entry, dict):
                    raise FetchError(f"{key}[{index}]: expected an object")
                if entry.get("service") == AWS_SERVICE:
                    found.append(_network(entry.get(prefix), version, f"{key}[{index}].{prefix}"))
    elif source.format == "fastly":
        document = _json(body)
        for key, version in (("addresses", 4), ("ipv6_addresses", 6)):
            for index, value in enumerate(_entries(document, key)):
                found.append(_network(value, version, f"{key}[{index}]"))
    else:  # pragma: no cover - the table in lists.py names only these
        raise FetchError(f"unknown format {source.format!r}")
    if not found:
        raise FetchError("no networks in the answer")
    return found


# ---- writing -------------------------------------------------------------------------------


def write_list(
    directory: Path, name: str, networks: Sequence[Network], sources: Sequence[str], fetched: datetime
) -> Path:
    """Write ``<directory>/<name>.txt`` atomically (temporary file, fsync, ``os.replace``), mode 0644.

    The text is read back with the loader's own parser first, so what is
    written is what :func:`realip.ranges.load` accepts. Raises :class:`OSError`
    (nothing replaced) or :class:`RangesError`.
    """
    notes = [f"written by realip {__version__} (realip ranges update); one network per line"]
    if name == "cloudfront":
        notes.append(f"service: {AWS_SERVICE}")
    text = render_file(name, networks, sources, fetched, notes)
    parse_file(text, name=name)
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)  # whatever the umask: the application may run as another user
    target = directory / f"{name}.txt"
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), 0o644)
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash
        directory_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    return target


def _readable_by_everyone(path: Path) -> bool:
    """Whether a user other than the owner can read ``path`` (every directory above it searchable)."""
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        for parent in path.resolve().parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


# ---- the command -------------------------------------------------------------------------


def _choose(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(refreshable_names())
    chosen: list[str] = []
    for raw in names:
        try:
            name = normalise_name(raw)
        except KeyError as exc:
            raise UsageError(str(exc)) from None
        provider = PROVIDERS.get(name)
        if provider is None:
            raise UsageError(f"{name} is built in (fixed by RFCs): there is nothing to fetch")
        if not provider.refreshable:
            raise UsageError(
                f"{name} cannot be refreshed: {provider.title} publishes no machine-readable list; its ranges "
                f"ship with realip, kept by hand from {' '.join(provider.documentation)}"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise UsageError("no list named")
    return chosen


def update(
    names: Iterable[str] | None = None,
    *,
    directory: Path | str | None = None,
    urls: Mapping[str, str] | Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_BYTES,
) -> list[UpdateResult]:
    """Fetch, check and write each named list (default: every refreshable one).

    ``directory`` defaults to :func:`realip.ranges.cache_dir`; ``urls`` overrides
    source URLs by key (see :func:`resolve_urls`). Raises :class:`UsageError`
    before fetching anything when the request is wrong; otherwise returns one
    :class:`UpdateResult` per list, failures included (each failure keeps the
    last good copy). A list with two sources (Cloudflare) is written only when
    both are good.
    """
    env = os.environ if environ is None else environ
    chosen = _choose(names)
    url_for = resolve_urls(urls, env)
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"timeout {timeout!r}: expected a positive number of seconds")
    folder = Path(directory) if directory is not None else cache_dir(env)
    if folder is None:
        raise UsageError("no cache directory: set REALIP_RANGES_DIR or pass --dir")
    results = []
    for name in chosen:
        provider = PROVIDERS[name]
        used: list[str] = []
        try:
            collected: list[Network] = []
            for source in provider.sources:
                url = url_for[source.key]
                try:
                    collected += parse_source(source, fetch(url, timeout=timeout, max_bytes=max_bytes))
                except FetchError as exc:
                    raise FetchError(f"{url}: {exc}") from None
                used.append(url)
            try:
                checked = check_networks(collected)
            except RangesError as exc:
                raise FetchError(f"{' '.join(used)}: refused: {exc}") from None
            path = write_list(folder, name, checked, used, datetime.now(timezone.utc).replace(microsecond=0))
        except (RangesError, OSError) as exc:
            clear_cache()
            message = f"{exc}; " if isinstance(exc, RangesError) else f"cannot write to {folder}: {exc}; "
            try:
                kept = load(name, directory=folder)
            except RangesError as broken:
                results.append(UpdateResult(name, False, message + f"and no usable copy: {broken}", None, 0))
                continue
            when = format_timestamp(kept.fetched) if kept.fetched else "?"
            what = "the last good copy" if kept.origin == "cache" else "the copy shipped with realip"
            message += f"kept {what} ({kept.path}, fetched {when})"
            results.append(UpdateResult(name, False, message, kept.path, len(kept.networks)))
        else:
            message = f"{len(checked)} networks from {' '.join(used)} written to {path}"
            if not _readable_by_everyone(path):
                message += (
                    " (note: other users cannot read it, so an application running as another user uses "
                    "its shipped copy: point REALIP_RANGES_DIR at a directory every user can read)"
                )
            results.append(UpdateResult(name, True, message, path, len(checked)))
    clear_cache()
    return results
