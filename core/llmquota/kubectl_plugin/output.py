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


def format_duration(seconds: float) -> str:
    """A duration as kubectl shows ages: 45s, 12m, 3h20m, 5d4h, 40d."""
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes and hours < 8 else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours and days < 8 else f"{days}d"


def time_until(moment: datetime | None, now: datetime) -> str:
    """How long until `moment` ("now" once it has passed, "-" without one)."""
    if moment is None:
        return NONE
    seconds = (moment - now).total_seconds()
    return "now" if seconds <= 0 else format_duration(seconds)


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
