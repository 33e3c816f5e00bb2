"""The two outputs of a :class:`~realip.doctor.model.Report`: the human text
(a section per topic, columns lined up, "→" advice below) and the JSON
document (``--json``, every value as the checks wrote it, no layout)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, Final

from .. import __version__
from .model import CHECKS, Finding, Report

__all__ = ["render_json", "render_text"]

_LABELS: Final = {"ok": "ok", "info": "info", "warn": "WARN", "problem": "PROBLEM"}
_COLOURS: Final = {"ok": "32", "info": "2", "warn": "33", "problem": "1;31"}
#: A column is never padded wider than this.
_MAX_COLUMN: Final = 30


def render_json(report: Report) -> dict[str, Any]:
    return report.to_json()


def _column_widths(findings: Sequence[Finding]) -> dict[tuple[str, int], int]:
    """(check, column index) -> width: the columns of one check line up across the report."""
    widths: dict[tuple[str, int], int] = {}
    for finding in findings:
        for index, cell in enumerate(finding.columns):
            key = (finding.check, index)
            widths[key] = min(max(widths.get(key, 0), len(cell)), _MAX_COLUMN)
    return widths


def _laid_out(finding: Finding, widths: dict[tuple[str, int], int]) -> str:
    """The summary with its leading columns padded to their widths."""
    prefix = " ".join(finding.columns)
    if not finding.columns or not finding.summary.startswith(prefix + " "):
        return finding.summary
    cells = [cell.ljust(widths[finding.check, index]) for index, cell in enumerate(finding.columns)]
    return "  ".join(cells) + "  " + finding.summary[len(prefix) + 1 :]


def render_text(report: Report, *, colour: bool = False, width: int = 100) -> str:
    """The human report: a section per topic, a line per finding, "→" advice below."""
    lines = [f"realip doctor {__version__}: what this host does to client addresses"]
    widths = _column_widths(report.findings)
    section = None
    for finding in report.findings:
        title = CHECKS.get(finding.check, "Other")
        if title != section:
            section = title
            lines += ["", title]
        label = f"{_LABELS[finding.status]:<7}"
        if colour:
            label = f"\033[{_COLOURS[finding.status]}m{label}\033[0m"
        lines.append(f"  {label} {_laid_out(finding, widths)}")
        lines += [f"          {detail}" for detail in finding.details]
        if finding.advice:
            lines += textwrap.wrap(
                finding.advice, width=width, initial_indent="          → ", subsequent_indent="            "
            )
    counts = report.to_json()["counts"]
    problems, warnings = counts["problem"], counts["warn"]
    totals = (
        f"{problems} problem{'s' * (problems != 1)}, {warnings} warning{'s' * (warnings != 1)}, "
        f"{counts['info']} info, {counts['ok']} ok"
    )
    lines += ["", f"Summary: {totals}"]
    if report.expect:
        expected = ", ".join(report.expect)
        verdict = "everything expected is there" if not problems else "exit status 1"
        lines.append(f"Expected (--expect): {expected}: {verdict}")
    if not report.probes:
        lines.append("(--no-probe: [::] listeners were not checked for IPv4)")
    return "\n".join(lines) + "\n"
