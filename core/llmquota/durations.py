"""Budget windows: parsing `30s|10m|1h|30d|1w|1mo|monthly` and finding the window around a time.

Windows are a pure function of (duration, anchor, now), so every replica that agrees on
`now` (Redis TIME) agrees on the boundary, and a budget resets at its boundary whatever
the traffic: nothing has to run at the boundary. The same arithmetic is written in Lua
(`store/lua/_windows.lua`); the integration tests hold the two equal.

All times are integer milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "MONTHLY_ALIASES",
    "NEVER",
    "SPELLINGS",
    "Window",
    "WindowSpec",
    "month_start_ms",
    "next_month_start_ms",
    "parse_duration",
    "window_at",
]

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"^([1-9][0-9]{0,8})([smhdw])$")
_MONTHS = re.compile(r"^([1-9][0-9]{0,8})mo$")
MONTHLY_ALIASES = ("monthly", "1mo")
"""`1mo` is LiteLLM's spelling of a month; LiteLLM resets it on the 1st, as `monthly` does."""
SPELLINGS = "<int>s|m|h|d|w (e.g. 30s, 10m, 1h, 30d, 1w), 1mo or monthly"

NEVER = -1
"""`Window.end_ms` of a budget without budgetDuration: it never resets."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How a budget's windows are cut: fixed length from an anchor, by month, or never."""

    kind: Literal["fixed", "monthly", "none"]
    length_ms: int = 0

    @property
    def wire(self) -> str:
        """The compact form handed to Lua: `fixed:<ms>`, `monthly` or `none`."""
        return f"fixed:{self.length_ms}" if self.kind == "fixed" else self.kind


@dataclass(frozen=True, slots=True)
class Window:
    """One window: spend counted in [start_ms, end_ms); end_ms is NEVER for no reset."""

    start_ms: int
    end_ms: int


def parse_duration(text: str | None) -> WindowSpec:
    """Parse a budgetDuration; None (absent) means the budget never resets."""
    if text is None:
        return WindowSpec("none")
    if text in MONTHLY_ALIASES:
        return WindowSpec("monthly")
    if _MONTHS.match(text):
        # Windows of several calendar months have no arithmetic in the scripts (yet).
        msg = (
            f"budgetDuration {text!r}: windows of several months are not supported; write "
            "1mo (or monthly) for calendar months, or days, e.g. 90d"
        )
        raise ValueError(msg)
    match = _DURATION.match(text)
    if match is None:
        msg = f"budgetDuration {text!r} is not {SPELLINGS}"
        raise ValueError(msg)
    return WindowSpec("fixed", int(match.group(1)) * _UNIT_MS[match.group(2)])


def month_start_ms(now_ms: int) -> int:
    """The 1st of now's month, 00:00 UTC."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return int(datetime(now.year, now.month, 1, tzinfo=UTC).timestamp()) * 1000


def next_month_start_ms(now_ms: int) -> int:
    """The 1st of the month after now's, 00:00 UTC."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000


def window_at(spec: WindowSpec, anchor_ms: int, now_ms: int) -> Window:
    """The window of `spec` that contains `now_ms`.

    Fixed windows are cut from the anchor (the subject's creation), so a 1h budget created
    at 10:17 resets at 11:17, 12:17, ...; monthly windows follow the calendar.
    """
    if spec.kind == "none":
        return Window(0, NEVER)
    if spec.kind == "monthly":
        return Window(month_start_ms(now_ms), next_month_start_ms(now_ms))
    start = anchor_ms + ((now_ms - anchor_ms) // spec.length_ms) * spec.length_ms
    return Window(start, start + spec.length_ms)
