"""``realip ranges show`` and ``realip ranges update``: the command line of :mod:`realip.ranges`.

Exit status: 0 when everything asked for was done, 1 when a list could not be
updated (its last good copy is kept) or cannot be loaded, 2 for bad usage
(unknown name, a list that cannot be refreshed, a bad ``--url``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from . import RangesError, UnknownRangeError, known_names, load, report
from .lists import PROVIDERS, format_timestamp

_LABELS = {"ok": "ok", "info": "info", "warn": "WARN", "problem": "PROBLEM"}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of seconds")
    return value


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ranges`` (with ``show`` and ``update``) to the ``realip`` command's subcommands."""
    names = ", ".join(known_names())
    refreshable = ", ".join(name for name, provider in PROVIDERS.items() if provider.refreshable)
    ranges = commands.add_parser(
        "ranges",
        help="named ranges for trusted_proxies (cloudflare, ...): show them, fetch them again",
        description=(
            f"Named ranges usable in trusted_proxies: {names}. Provider lists ship with realip; "
            "'update' fetches the refreshable ones into a cache directory ($REALIP_RANGES_DIR, else "
            "$XDG_CACHE_HOME/realip/ranges, else ~/.cache/realip/ranges), which applications read at start-up."
        ),
    )
    ranges.set_defaults(ranges_parser=ranges)
    actions = ranges.add_subparsers(dest="ranges_command", metavar="ACTION")

    show = actions.add_parser(
        "show",
        help="where each list comes from and how old it is; with NAME, its networks",
        description=(
            "Without NAME: every list, its origin (cache, shipped, built in), age and a warning past its maximum "
            "age. With NAME: that list in the file format, header first (origin, source, fetch time), then one "
            "network per line."
        ),
    )
    show.add_argument("name", nargs="?", metavar="NAME", help=f"one of {names}")
    show.add_argument("--dir", metavar="DIR", help="cache directory to read (default: as above)")

    update = actions.add_parser(
        "update",
        help="fetch provider lists again into the cache directory",
        description=(
            f"Fetch each named list (default: {refreshable}) from its provider, check it, and write it atomically "
            "into the cache directory. A failed or refused fetch keeps the last good copy; the exit status is 1 "
            "if any list failed. google-cloud-lb and huawei-elb have no machine-readable publication and cannot "
            "be refreshed."
        ),
    )
    update.add_argument("names", nargs="*", metavar="NAME", help=f"lists to fetch (default: {refreshable})")
    update.add_argument("--dir", metavar="DIR", help="cache directory to write (default: as above)")
    update.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="KEY=URL",
        help="fetch from a mirror: KEY is cloudflare-v4, cloudflare-v6, cloudfront or fastly (also "
        "REALIP_RANGES_URL_<KEY> in the environment, e.g. REALIP_RANGES_URL_CLOUDFLARE_V4)",
    )
    update.add_argument(
        "--timeout", type=_seconds, default=None, metavar="S", help="seconds allowed for each fetch (default 30)"
    )


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``realip ranges ...`` parsed by :func:`add_parser`; returns the exit status."""
    stdout = out if out is not None else sys.stdout
    stderr = err if err is not None else sys.stderr
    if args.ranges_command == "show":
        try:
            return _show(args, stdout, stderr)
        except BrokenPipeError:  # `realip ranges show cloudflare | head`
            if out is None:  # keep the interpreter from complaining again when it flushes stdout at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.ranges_command == "update":
        return _update(args, stdout, stderr)
    args.ranges_parser.print_usage(stderr)
    print("realip ranges: error: an action is required (show or update)", file=stderr)
    return 2


def _show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.name is None:
        worst = 0
        for line in report(directory=args.dir):
            out.write(f"{_LABELS[line.status]:<7} {line.summary}\n")
            if line.advice:
                out.write(f"        {line.advice}\n")
            if line.status == "problem":
                worst = 1
        return worst
    try:
        ranges = load(args.name, directory=args.dir)
    except UnknownRangeError as exc:
        print(f"realip ranges show: {exc}", file=err)
        return 2
    except RangesError as exc:
        print(f"realip ranges show: {exc}", file=err)
        return 1
    out.write(f"# realip named range: {ranges.name}\n")
    out.write(f"# origin: {ranges.origin}" + (f" ({ranges.path})" if ranges.path else "") + "\n")
    for source in ranges.sources:
        out.write(f"# source: {source}\n")
    if ranges.fetched is not None and ranges.age_days is not None:
        out.write(f"# fetched: {format_timestamp(ranges.fetched)}\n")
        out.write(f"# age: {ranges.age_days:.0f} days (warned about past {ranges.max_age_days})\n")
        if ranges.stale:
            advice = (
                f"run: realip ranges update {ranges.name}"
                if ranges.refreshable
                else "not refreshable: check the source and upgrade realip"
            )
            out.write(f"# WARNING: older than {ranges.max_age_days} days; {advice}\n")
    for note in ranges.notes:
        out.write(f"# WARNING: {note}\n")
    for network in ranges.networks:
        out.write(f"{network}\n")
    return 0


def _update(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .fetch import DEFAULT_TIMEOUT, UsageError, update

    try:
        results = update(
            args.names or None,
            directory=args.dir,
            urls=args.url,
            timeout=args.timeout if args.timeout is not None else DEFAULT_TIMEOUT,
        )
    except UsageError as exc:
        print(f"realip ranges update: {exc}", file=err)
        return 2
    failed = 0
    for result in results:
        if result.ok:
            out.write(f"{result.name}: {result.message}\n")
        else:
            failed += 1
            err.write(f"realip ranges update: {result.name}: FAILED: {result.message}\n")
    out.flush()
    return 1 if failed else 0
