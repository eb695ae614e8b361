"""How the plugin prints: kubectl's table (upper-case headers, columns three spaces
apart, "-" for nothing), money, durations, and `-o json|yaml` documents."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import yaml

__all__ = [
    "NONE",
    "OutputFormat",
    "format_document",
    "format_duration",
    "format_table",
    "format_usd",
    "iso_time",
    "time_until",
    "until",
]

OutputFormat = Literal["table", "json", "yaml"]
NONE = "-"
"""What a cell shows when there is nothing to show (a field not written yet)."""

_COLUMN_GAP = "   "  # kubectl's printer pads columns with three spaces


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A kubectl-style table; the last column is not padded."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(_COLUMN_GAP.join(cells).rstrip())
    return "\n".join(lines) + "\n"


def format_usd(amount: float | None) -> str:
    """USD for a column: cents from 1 cent up, two significant digits below (LLM requests
    cost fractions of a cent)."""
    if amount is None:
        return NONE
    if amount == 0:
        return "0"
    if abs(amount) >= 0.01:
        return f"{amount:.2f}"
    return f"{amount:.2g}"


def _pair(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}{small}{small_unit}" if small else f"{big}{big_unit}"


def format_duration(seconds: float) -> str:
    """A duration exactly as kubectl prints ages (apimachinery's HumanDuration): 90s,
    5m30s, 45m, 3h20m, 20h, 5d4h, 40d, 2y30d."""
    whole = max(0, int(seconds))
    minutes, second = divmod(whole, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    years, day = divmod(days, 365)
    steps = (  # (applies, shown), in HumanDuration's order
        (whole < 120, f"{whole}s"),
        (minutes < 10, _pair(minutes, "m", second, "s")),
        (minutes < 180, f"{minutes}m"),
        (hours < 8, _pair(hours, "h", minute, "m")),
        (hours < 48, f"{hours}h"),
        (days < 8, _pair(days, "d", hour, "h")),
        (days < 365 * 2, f"{days}d"),
        (years < 8, _pair(years, "y", day, "d")),
    )
    return next((shown for applies, shown in steps if applies), f"{years}y")


def time_until(moment: datetime | None, now: datetime) -> str:
    """How long until `moment` ("now" once it has passed, "-" without one)."""
    if moment is None:
        return NONE
    seconds = (moment - now).total_seconds()
    return "now" if seconds <= 0 else format_duration(seconds)


def until(moment: datetime, now: datetime) -> str:
    """A moment and how far off it is: `2026-12-02T00:00:00Z (in 14h)`."""
    return f"{iso_time(moment)} (in {time_until(moment, now)})"


def iso_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, as the API server writes times; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_document(document: Mapping[str, Any], output: OutputFormat) -> str:
    """`-o json` (indented like kubectl's) or `-o yaml`."""
    if output == "json":
        return json.dumps(document, indent=4) + "\n"
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
