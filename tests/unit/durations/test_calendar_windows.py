"""Calendar windows start at midnight in their time zone: days of 23 and 25 hours at the
daylight-saving changes, weeks from Monday, quarters from Jan/Apr/Jul/Oct 1st."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.time_zones import ZONED_TIMES, ZONES

from llmquota.calendar import CALENDAR_UNITS
from llmquota.durations import (
    BOUNDS_AFTER,
    BOUNDS_BEFORE,
    WindowSpec,
    calendar_bounds,
    parse_duration,
    window_at,
    window_spec,
)

HOUR_MS = 3_600_000


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def local(milliseconds: int, zone: str) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, tz=ZoneInfo(zone))


def daily(zone: str) -> WindowSpec:
    return parse_duration("daily", zone)


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", "2026-03-29", 23),  # clocks forward at 02:00
        ("Europe/Berlin", "2026-10-25", 25),  # clocks back at 03:00
        ("America/New_York", "2026-03-08", 23),
        ("America/New_York", "2026-11-01", 25),
        ("Australia/Lord_Howe", "2026-04-05", 24.5),  # a half-hour change
        ("Europe/Berlin", "2026-07-01", 24),
    ],
)
def test_a_day_lasts_as_long_as_the_zones_clocks_say(zone: str, day: str, hours: float) -> None:
    noon = datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=ZoneInfo(zone))
    window = window_at(daily(zone), 0, ms(noon))
    assert (window.end_ms - window.start_ms) / HOUR_MS == hours
    start, end = local(window.start_ms, zone), local(window.end_ms, zone)
    assert start.isoformat()[:19] == f"{day}T00:00:00"
    assert end.date() == noon.date() + timedelta(days=1)
    assert (end.hour, end.minute) == (0, 0)


def test_a_day_whose_midnight_is_skipped_starts_when_the_clocks_jump() -> None:
    """Santiago springs forward at 00:00 to 01:00 on 2026-09-06: that day starts at 01:00."""
    zone = "America/Santiago"
    window = window_at(daily(zone), 0, ms(datetime(2026, 9, 6, 15, tzinfo=UTC)))
    assert local(window.start_ms, zone).isoformat() == "2026-09-06T01:00:00-03:00"
    assert window.start_ms == ms(datetime(2026, 9, 6, 4, tzinfo=UTC))
    assert (window.end_ms - window.start_ms) / HOUR_MS == 23


def test_a_skipped_day_is_never_the_window() -> None:
    """Apia skipped 2011-12-30: the 29th is followed by the 31st."""
    zone = "Pacific/Apia"
    bounds = calendar_bounds(daily(zone), ms(datetime(2011, 12, 30, 12, tzinfo=UTC)))
    days = [local(bound, zone).date().isoformat() for bound in bounds]
    assert days == ["2011-12-29", "2011-12-31", "2012-01-01", "2012-01-02"]


def test_weeks_start_on_monday_midnight() -> None:
    zone = "Europe/Berlin"
    sunday_night = datetime(2026, 11, 29, 23, 59, tzinfo=ZoneInfo(zone))
    window = window_at(parse_duration("weekly", zone), 0, ms(sunday_night))
    assert local(window.start_ms, zone).isoformat() == "2026-11-23T00:00:00+01:00"
    assert local(window.end_ms, zone).isoformat() == "2026-11-30T00:00:00+01:00"
    # The week of the October change has 7 * 24 + 1 hours.
    october = window_at(
        parse_duration("weekly", zone), 0, ms(datetime(2026, 10, 25, 12, tzinfo=UTC))
    )
    assert (october.end_ms - october.start_ms) / HOUR_MS == 7 * 24 + 1


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        ("2026-01-01T00:00:00", "2026-01-01", "2026-04-01"),
        ("2026-03-31T23:59:59", "2026-01-01", "2026-04-01"),
        ("2026-05-15T10:00:00", "2026-04-01", "2026-07-01"),
        ("2026-08-01T00:00:00", "2026-07-01", "2026-10-01"),
        ("2026-12-31T23:59:59", "2026-10-01", "2027-01-01"),
    ],
)
def test_quarters_start_on_jan_apr_jul_oct_1st(now: str, start: str, end: str) -> None:
    zone = "America/New_York"
    moment = datetime.fromisoformat(now).replace(tzinfo=ZoneInfo(zone))
    window = window_at(parse_duration("quarterly", zone), 0, ms(moment))
    assert local(window.start_ms, zone).isoformat()[:19] == f"{start}T00:00:00"
    assert local(window.end_ms, zone).isoformat()[:19] == f"{end}T00:00:00"


def test_a_berlin_month_starts_an_hour_before_the_utc_one() -> None:
    now = ms(datetime(2026, 11, 30, 23, 30, tzinfo=UTC))  # December already in Berlin
    berlin = window_at(parse_duration("monthly", "Europe/Berlin"), 0, now)
    utc = window_at(parse_duration("monthly"), 0, now)
    assert berlin.start_ms == ms(datetime(2026, 11, 30, 23, tzinfo=UTC))
    assert utc.start_ms == ms(datetime(2026, 11, 1, tzinfo=UTC))


def test_yearly_starts_on_january_1st() -> None:
    zone = "Asia/Tokyo"
    window = window_at(
        parse_duration("yearly", zone), 0, ms(datetime(2026, 12, 31, 16, tzinfo=UTC))
    )
    assert local(window.start_ms, zone).isoformat() == "2027-01-01T00:00:00+09:00"


@given(unit=st.sampled_from(CALENDAR_UNITS), zone=st.sampled_from(ZONES), now_ms=ZONED_TIMES)
def test_a_calendar_window_contains_now_and_starts_at_a_local_midnight(
    unit: str, zone: str, now_ms: int
) -> None:
    spec = parse_duration(unit, zone)
    window = window_at(spec, 0, now_ms)
    assert window.start_ms <= now_ms < window.end_ms
    start = local(window.start_ms, zone)
    just_before = local(window.start_ms - 1, zone)
    assert just_before.date() < start.date()  # the first instant of its local day
    first_day = start.date()
    if unit == "weekly":
        assert first_day.weekday() == 0
    if unit in ("monthly", "quarterly", "yearly"):
        assert first_day.day == 1
    if unit == "quarterly":
        assert first_day.month in (1, 4, 7, 10)
    if unit == "yearly":
        assert first_day.month == 1
    assert window_at(spec, 0, window.end_ms).start_ms == window.end_ms  # windows tile


@given(unit=st.sampled_from(CALENDAR_UNITS), zone=st.sampled_from(ZONES), now_ms=ZONED_TIMES)
def test_the_bounds_handed_to_the_scripts_surround_now(unit: str, zone: str, now_ms: int) -> None:
    spec = parse_duration(unit, zone)
    bounds = calendar_bounds(spec, now_ms)
    window = window_at(spec, 0, now_ms)
    assert len(bounds) == BOUNDS_BEFORE + 1 + BOUNDS_AFTER
    assert bounds == sorted(bounds)
    assert bounds[BOUNDS_BEFORE : BOUNDS_BEFORE + 2] == [window.start_ms, window.end_ms]
    assert window_at(spec, 0, bounds[0]).start_ms == bounds[0]


@pytest.mark.parametrize(
    ("text", "zone", "wire"),
    [
        ("monthly", "UTC", "monthly"),  # UTC months: the scripts cut them themselves
        ("1mo", "UTC", "monthly"),
        ("monthly", "Europe/Berlin", "cal:monthly:Europe/Berlin"),
        ("daily", "UTC", "cal:daily:UTC"),
        ("weekly", "America/New_York", "cal:weekly:America/New_York"),
        ("quarterly", "Etc/GMT+5", "cal:quarterly:Etc/GMT+5"),
        ("yearly", "UTC", "cal:yearly:UTC"),
        ("1d", "Europe/Berlin", "fixed:86400000"),  # fixed windows ignore the zone
        (None, "Europe/Berlin", "none"),
    ],
)
def test_wire_forms_round_trip(text: str | None, zone: str, wire: str) -> None:
    spec = parse_duration(text, zone)
    assert spec.wire == wire
    assert window_spec(wire) == spec or spec.kind == "fixed"
    assert window_spec(wire).wire == wire
    assert spec.needs_bounds == wire.startswith("cal:")
