"""The Lua `budget_window` (what admission enforces) equals the Python `window_at` (what
statuses and the operator report), for random windows, anchors and times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from importlib.resources import files

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.redis_server import RedisEndpoint

from llmquota.durations import WindowSpec, window_at

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
    + "\nreturn {budget_window(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))}\n"
)


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
