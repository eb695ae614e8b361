"""Budget windows: parsing a budgetDuration and finding the window around a time.

Fixed windows (`30s|10m|1h|30d|1w`) are cut from an anchor (the subject's creation);
calendar windows (`daily`, `weekly`, `monthly` or `1mo`, `quarterly`, `yearly`) start at
midnight in a time zone (`calendar.py`). Windows are a pure function of (duration,
anchor, now), so every replica that agrees on `now` (Redis TIME) agrees on the boundary,
and a budget resets at its boundary whatever the traffic: nothing has to run then.

The scripts cut fixed windows and UTC months themselves (`store/lua/_common.lua`); Lua
has no zone data, so for the other calendar windows the caller hands them the boundaries
around its own clock (`calendar_bounds`). The integration tests hold the two equal.

All times are integer milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from llmquota.calendar import CALENDAR_UNITS, CalendarUnit, check_zone, period_bounds

__all__ = [
    "BOUNDS_AFTER",
    "BOUNDS_BEFORE",
    "DEFAULT_ZONE",
    "MONTHLY_ALIASES",
    "NEVER",
    "SPELLINGS",
    "Window",
    "WindowSpec",
    "calendar_bounds",
    "check_zone",
    "parse_duration",
    "window_at",
    "window_spec",
]

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"^([1-9][0-9]{0,8})([smhdw])$")
_MONTHS = re.compile(r"^([1-9][0-9]{0,8})mo$")
MONTHLY_ALIASES = ("monthly", "1mo")
"""`1mo` is LiteLLM's spelling of a month; LiteLLM resets it on the 1st, as `monthly` does."""
SPELLINGS = (
    "<int>s|m|h|d|w (e.g. 30s, 10m, 1h, 30d, 1w), daily, weekly, monthly (or 1mo), "
    "quarterly or yearly"
)
DEFAULT_ZONE = "UTC"

NEVER = -1
"""`Window.end_ms` of a budget without budgetDuration: it never resets."""

BOUNDS_BEFORE = 1
BOUNDS_AFTER = 2
"""`calendar_bounds` hands the scripts the window around the caller's clock and one
window on either side, so that a Redis clock just across a boundary from the caller's
still finds its window."""

_FIXED = "fixed:"
_CALENDAR = "cal:"
_UTC_MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How a budget's windows are cut: fixed length from an anchor, by the calendar in a
    time zone, or never."""

    kind: Literal["fixed", "calendar", "none"]
    length_ms: int = 0
    unit: CalendarUnit | None = None
    zone: str = DEFAULT_ZONE

    @property
    def wire(self) -> str:
        """The compact form handed to Lua: `fixed:<ms>`, `monthly` (UTC months, which the
        scripts compute), `cal:<unit>:<zone>` (boundaries handed in) or `none`."""
        if self.kind == "fixed":
            return f"{_FIXED}{self.length_ms}"
        if self.kind == "none":
            return "none"
        if self.unit == "monthly" and self.zone == DEFAULT_ZONE:
            return _UTC_MONTHLY
        return f"{_CALENDAR}{self.unit}:{self.zone}"

    @property
    def needs_bounds(self) -> bool:
        """Whether the scripts need this window's boundaries handed in (no zone data in Lua)."""
        return self.kind == "calendar" and self.wire != _UTC_MONTHLY


@dataclass(frozen=True, slots=True)
class Window:
    """One window: spend counted in [start_ms, end_ms); end_ms is NEVER for no reset."""

    start_ms: int
    end_ms: int


def parse_duration(text: str | None, zone: str = DEFAULT_ZONE) -> WindowSpec:
    """Parse a budgetDuration; None (absent) means the budget never resets. `zone` is
    the IANA zone whose midnight calendar windows start at."""
    if text is None:
        return WindowSpec("none")
    if text in MONTHLY_ALIASES:
        return WindowSpec("calendar", unit="monthly", zone=zone)
    if text in CALENDAR_UNITS:
        return WindowSpec("calendar", unit=text, zone=zone)
    if _MONTHS.match(text):
        msg = (
            f"budgetDuration {text!r}: windows of several months are not supported; write "
            "1mo (or monthly) for calendar months, quarterly for three, or days, e.g. 90d"
        )
        raise ValueError(msg)
    match = _DURATION.match(text)
    if match is None:
        msg = f"budgetDuration {text!r} is not {SPELLINGS}"
        raise ValueError(msg)
    return WindowSpec("fixed", int(match.group(1)) * _UNIT_MS[match.group(2)])


def window_spec(wire: str) -> WindowSpec:
    """The inverse of `WindowSpec.wire`."""
    if wire.startswith(_FIXED):
        return WindowSpec("fixed", int(wire.removeprefix(_FIXED)))
    if wire == _UTC_MONTHLY:
        return WindowSpec("calendar", unit="monthly")
    if wire.startswith(_CALENDAR):
        unit, zone = wire.removeprefix(_CALENDAR).split(":", 1)
        return WindowSpec("calendar", unit=cast("CalendarUnit", unit), zone=zone)
    return WindowSpec("none")


def window_at(spec: WindowSpec, anchor_ms: int, now_ms: int) -> Window:
    """The window of `spec` that contains `now_ms`.

    Fixed windows are cut from the anchor (the subject's creation), so a 1h budget created
    at 10:17 resets at 11:17, 12:17, ...; calendar windows follow the zone's calendar.
    """
    if spec.kind == "none":
        return Window(0, NEVER)
    if spec.kind == "calendar":
        start, end = period_bounds(_unit(spec), spec.zone, now_ms)
        return Window(start, end)
    start = anchor_ms + ((now_ms - anchor_ms) // spec.length_ms) * spec.length_ms
    return Window(start, start + spec.length_ms)


def calendar_bounds(spec: WindowSpec, now_ms: int) -> list[int]:
    """The boundaries the scripts pick a calendar window from: the start of the window
    before now's, now's own start, its end and the next window's end."""
    return list(period_bounds(_unit(spec), spec.zone, now_ms, BOUNDS_BEFORE, BOUNDS_AFTER))


def _unit(spec: WindowSpec) -> CalendarUnit:
    if spec.unit is None:
        msg = f"not a calendar window: {spec}"
        raise ValueError(msg)
    return spec.unit
