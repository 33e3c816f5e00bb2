"""The ``realip`` command (also ``python -m realip``).

``realip doctor`` tells what this host does to client addresses; see
:mod:`realip.doctor`. Exit status: 0 when the report was produced (whatever it
found), 1 when ``--expect`` was given and something expected is missing, 2 for
bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence

from . import __version__, doctor


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realip", description="Tools of realip, the real client address for ASGI and WSGI apps."
    )
    parser.add_argument("--version", action="version", version=f"realip {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    doctor_parser = commands.add_parser(
        "doctor",
        help="what this host does to client addresses",
        description=textwrap.fill(
            "Report what this host does to client addresses: net.ipv6.bindv6only, IPv4 forwarding, the TOA "
            "kernel module (with a live lookup on a loopback connection), and the TCP listeners of this network "
            "namespace, with advice for each finding. Each [::] listener is checked for IPv4 by connecting to "
            "127.0.0.1:PORT and closing at once (skip with --no-probe). Also lists the REALIP_* variables of "
            "this environment, validated as realip reads them. Exits 0 once the report is out; with --expect, "
            "exits 1 when something expected is missing (a PROBLEM line, naming the docs page that fixes it).",
            79,
            break_on_hyphens=False,
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="expectations (--expect):\n"
        + "\n".join(
            textwrap.fill(text, 79, initial_indent=f"  {name:<11} ", subsequent_indent=" " * 14, break_on_hyphens=False)
            for name, text in doctor.EXPECTATIONS.items()
        ),
    )
    doctor_parser.add_argument("--json", action="store_true", help="print the report as JSON (stable schema) instead")
    doctor_parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not connect to other programs' [::] listeners to see whether they take IPv4",
    )
    doctor_parser.add_argument(
        "--expect",
        action="append",
        choices=list(doctor.EXPECTATIONS),
        default=[],
        metavar="WHAT",
        help="what this host should have: " + ", ".join(doctor.EXPECTATIONS) + " (repeatable; see below); "
        "a missing piece is a PROBLEM and the exit status 1",
    )
    from .ranges.cli import add_parser as add_ranges_parser

    add_ranges_parser(commands)  # realip ranges show|update
    from .serve import add_parser as add_serve_parser

    add_serve_parser(commands)  # realip serve APP --bind '[::]:8000'
    return parser


def _doctor(args: argparse.Namespace) -> int:
    report = doctor.collect(probes=not args.no_probe, expect=args.expect)
    if args.json:
        json.dump(doctor.render_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        sys.stdout.write(doctor.render_text(report, colour=colour))
    sys.stdout.flush()
    return 1 if args.expect and report.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad usage)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "doctor":
        try:
            return _doctor(args)
        except BrokenPipeError:  # `realip doctor | head`
            # Keep the interpreter from complaining again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.command == "ranges":
        from .ranges.cli import run as run_ranges

        return run_ranges(args)
    if args.command == "serve":
        from .serve import main as run_serve

        return run_serve(args)
    parser.print_usage(sys.stderr)
    print("realip: error: a command is required (try: realip doctor)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
