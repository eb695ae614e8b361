"""The Lua `budget_window` (what admission enforces) equals the Python `window_at` (what
statuses and the operator report), for random windows, anchors and times; for calendar
windows in a time zone, given the bounds a caller computed around its own clock, while
Redis' clock is hours away from the caller's, over zones and daylight-saving dates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from importlib.resources import files
from zoneinfo import ZoneInfo

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.redis_server import RedisEndpoint
from tests.support.time_zones import ZONED_TIMES, ZONES

from llmquota.calendar import CALENDAR_UNITS
from llmquota.durations import WindowSpec, calendar_bounds, parse_duration, window_at

pytestmark = pytest.mark.integration

UNIT_MS = (1_000, 60_000, 3_600_000, 86_400_000)
TIMES = st.integers(min_value=0, max_value=7_258_118_400_000)  # 1970 .. 2200
# Lua numbers are doubles: window arithmetic is exact while anchor + length < 2**53 ms,
# i.e. for windows shorter than ~140,000 years (a 999999999d window is off by a few ms).
LONGEST_EXACT_MS = 2**52
SPECS = st.one_of(
    st.just(WindowSpec("calendar", unit="monthly")),
    st.just(WindowSpec("none")),
    st.builds(
        lambda count, unit: WindowSpec("fixed", count * unit),
        st.integers(min_value=1, max_value=999_999_999),
        st.sampled_from(UNIT_MS),
    ).filter(lambda spec: spec.length_ms <= LONGEST_EXACT_MS),
)
# The shared prelude plus one line: the window the scripts compute.
WINDOW_SNIPPET = (
    files("llmquota.store").joinpath("lua/_common.lua").read_text()
    + "\nreturn {budget_window(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),"
    " cjson.decode(ARGV[4] or '[]'))}\n"
)
# The caller's clock up to 6 hours off Redis' (less than any day).
SKEWS = st.integers(min_value=-6 * 3_600_000, max_value=6 * 3_600_000)
# Daylight-saving changes: noon UTC on the days Berlin, New York, Santiago change clocks.
DST_DAYS = [
    "2026-03-29", "2026-10-25", "2026-03-08", "2026-11-01", "2026-04-05", "2026-09-06",
    "2011-12-30", "2024-03-31", "2037-10-25",
]  # fmt: skip


@pytest.fixture(scope="module")
def lua_window(redis_server: RedisEndpoint) -> Iterator[redis.commands.core.Script]:
    client = redis.Redis.from_url(redis_server.url)
    yield client.register_script(WINDOW_SNIPPET)
    client.close()


@settings(max_examples=300, deadline=None)
@given(spec=SPECS, anchor_ms=TIMES, now_ms=TIMES)
def test_lua_window_equals_python_window(
    lua_window: redis.commands.core.Script, spec: WindowSpec, anchor_ms: int, now_ms: int
) -> None:
    expected = window_at(spec, anchor_ms, now_ms)
    start, end = lua_window(args=[spec.wire, anchor_ms, now_ms])
    assert (start, end) == (expected.start_ms, expected.end_ms)


def ms(moment: str) -> int:
    """Milliseconds of an ISO 8601 UTC time."""
    return int(datetime.fromisoformat(moment).timestamp() * 1000)


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        ("2000-02-29T12:00:00Z", "2000-02-01T00:00:00Z", "2000-03-01T00:00:00Z"),  # leap year
        ("2100-02-28T23:59:59.999Z", "2100-02-01T00:00:00Z", "2100-03-01T00:00:00Z"),  # no leap
        ("2026-12-31T23:59:59.999Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    ],
)
def test_lua_monthly_windows_at_calendar_edges(
    lua_window: redis.commands.core.Script, now: str, start: str, end: str
) -> None:
    assert lua_window(args=["monthly", 0, ms(now)]) == [ms(start), ms(end)]


@settings(max_examples=400, deadline=None)
@given(
    unit=st.sampled_from(CALENDAR_UNITS),
    zone=st.sampled_from(ZONES),
    caller_ms=ZONED_TIMES,
    skew_ms=SKEWS,
)
def test_lua_calendar_window_equals_python_window_across_clocks(
    lua_window: redis.commands.core.Script, unit: str, zone: str, caller_ms: int, skew_ms: int
) -> None:
    spec = parse_duration(unit, zone)
    redis_ms = caller_ms + skew_ms
    bounds = calendar_bounds(spec, caller_ms)
    expected = window_at(spec, 0, redis_ms)
    start, end = lua_window(args=[spec.wire, 0, redis_ms, json.dumps(bounds)])
    assert (start, end) == (expected.start_ms, expected.end_ms)


@pytest.mark.parametrize("day", DST_DAYS)
@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("hour", [-1, 0, 1, 2, 3, 4, 22, 23, 24, 25])
def test_lua_daily_windows_around_daylight_saving_changes(
    lua_window: redis.commands.core.Script, day: str, zone: str, hour: int
) -> None:
    """Every hour around each change, with the caller's clock a few minutes off."""
    spec = parse_duration("daily", zone)
    local_midnight = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone))
    redis_ms = int(local_midnight.timestamp() * 1000) + hour * 3_600_000
    for caller_ms in (redis_ms - 300_000, redis_ms, redis_ms + 300_000):
        expected = window_at(spec, 0, redis_ms)
        bounds = json.dumps(calendar_bounds(spec, caller_ms))
        assert lua_window(args=[spec.wire, 0, redis_ms, bounds]) == [
            expected.start_ms,
            expected.end_ms,
        ]
