"""Calendar periods in a time zone: days, weeks from Monday, months, quarters and years,
each starting at the first instant of its first day in an IANA zone.

Why periods are numbered rather than read off a local date: a local midnight may not
exist (zones that spring forward at 00:00, such as America/Santiago) or occur twice
(zones that fall back across it), and a whole day may be skipped (Pacific/Apia on
2011-12-30). Converting "now's local date" to its midnight could then give a start after
now or an end before it. So periods are counted from 1970 (day, week, month, quarter or
year number), each period's start is computed on its own, and the period containing now
is found by stepping from a guess until `start <= now < next start`. A day therefore
lasts 23, 24 or 25 hours, as the zone's clocks say.

All times are integer milliseconds since the Unix epoch; the zone data come from
`zoneinfo` (the system's, else the `tzdata` package, a dependency, so slim images work).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CALENDAR_UNITS",
    "CalendarUnit",
    "check_zone",
    "period_bounds",
    "period_start_ms",
]

CalendarUnit = Literal["daily", "weekly", "monthly", "quarterly", "yearly"]
CALENDAR_UNITS: tuple[CalendarUnit, ...] = get_args(CalendarUnit)

_EPOCH_DAY = date(1970, 1, 1)
_EPOCH_MONDAY = date(1969, 12, 29)
_MONTHS_PER_PERIOD = {"monthly": 1, "quarterly": 3, "yearly": 12}
_GAP_SEARCH_STEPS = 64  # a bisection over any gap (at most a few days) ends well within


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_zone(name: str) -> None:
    """Refuse a name that is not an IANA time zone, saying what to write."""
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        msg = (
            f"timeZone {name!r} is not an IANA time zone; write a name such as UTC, "
            "Europe/Berlin or America/New_York"
        )
        raise ValueError(msg) from error


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _first_instant_ms(day: date, zone: ZoneInfo) -> int:
    """The first instant whose local date in `zone` is `day` or later.

    Usually local midnight. When midnight falls twice, its first occurrence (fold 0).
    When it does not exist (a gap), fold 0 and fold 1 bracket the end of the gap, which
    is found by bisection: the day starts when the clocks jump.
    """
    midnight = datetime.combine(day, time(), tzinfo=zone)
    early = _ms(midnight)
    late = _ms(midnight.replace(fold=1))
    if late >= early:
        return early
    low, high = late, early  # local date at `low` is before `day`; at `high`, not
    for _ in range(_GAP_SEARCH_STEPS):
        if high - low <= 1:
            break
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle / 1000, tz=zone).date() >= day:
            high = middle
        else:
            low = middle
    return high


def _months_since_1970(day: date) -> int:
    return (day.year - 1970) * 12 + day.month - 1


def _period_of(unit: CalendarUnit, day: date) -> int:
    """The number of the period (counted from 1970) that local date `day` falls in."""
    if unit == "daily":
        return (day - _EPOCH_DAY).days
    if unit == "weekly":
        return (day - _EPOCH_MONDAY).days // 7
    return _months_since_1970(day) // _MONTHS_PER_PERIOD[unit]


def _first_day(unit: CalendarUnit, period: int) -> date:
    """The local date period number `period` begins on."""
    if unit == "daily":
        return _EPOCH_DAY + timedelta(days=period)
    if unit == "weekly":
        return _EPOCH_MONDAY + timedelta(days=7 * period)
    months = period * _MONTHS_PER_PERIOD[unit]
    return date(1970 + months // 12, months % 12 + 1, 1)


def period_start_ms(unit: CalendarUnit, zone_name: str, period: int) -> int:
    """When period number `period` begins, in ms since the epoch."""
    return _first_instant_ms(_first_day(unit, period), _zone(zone_name))


def _period_containing(unit: CalendarUnit, zone_name: str, now_ms: int) -> int:
    """The number of the period with `start <= now_ms < next start`: now's local date
    gives the guess, which is off by one at most around a gap or a repeated midnight."""
    local_day = datetime.fromtimestamp(now_ms / 1000, tz=_zone(zone_name)).date()
    period = _period_of(unit, local_day)
    while period_start_ms(unit, zone_name, period) > now_ms:
        period -= 1
    while period_start_ms(unit, zone_name, period + 1) <= now_ms:
        period += 1
    return period


def period_bounds(
    unit: CalendarUnit, zone_name: str, now_ms: int, before: int = 0, after: int = 1
) -> tuple[int, ...]:
    """Starts of consecutive periods around the one containing `now_ms`: `before` starts
    before its own, its own start, and `after` further starts (with after=1, its end).

    An empty period (a skipped day) is left out, so the bounds strictly increase.
    """
    period = _period_containing(unit, zone_name, now_ms)
    own = period_start_ms(unit, zone_name, period)
    return (
        *reversed(_distinct_starts(unit, zone_name, period, step=-1, count=before)),
        own,
        *_distinct_starts(unit, zone_name, period, step=1, count=after),
    )


def _distinct_starts(
    unit: CalendarUnit, zone_name: str, period: int, *, step: int, count: int
) -> list[int]:
    """`count` period starts after `period`'s in direction `step`, each different from the
    last (the start of an empty period equals its neighbour's)."""
    starts: list[int] = []
    last = period_start_ms(unit, zone_name, period)
    while len(starts) < count:
        period += step
        start = period_start_ms(unit, zone_name, period)
        if start != last:
            starts.append(start)
            last = start
    return starts
