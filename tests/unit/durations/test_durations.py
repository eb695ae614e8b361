"""Durations parse exactly the documented forms; windows contain now and fall on their
anchor (fixed) or on the 1st of the month (monthly)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from llmquota.durations import (
    NEVER,
    Window,
    WindowSpec,
    parse_duration,
    window_at,
)
from llmquota.models import BudgetSpec
from llmquota.models.common import DURATION_PATTERN

UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# 1970 .. 2200, in ms: a window computation never sees times outside this.
TIMES = st.integers(min_value=0, max_value=7_258_118_400_000)
FIXED = st.builds(
    lambda count, unit: WindowSpec("fixed", count * UNIT_MS[unit]),
    st.integers(min_value=1, max_value=999_999_999),
    st.sampled_from(sorted(UNIT_MS)),
)


MONTHLY = WindowSpec("calendar", unit="monthly")


def as_datetime(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


@given(st.integers(min_value=1, max_value=999_999_999), st.sampled_from(sorted(UNIT_MS)))
def test_valid_durations_round_trip(count: int, unit: str) -> None:
    text = f"{count}{unit}"
    spec = parse_duration(text)
    assert spec == WindowSpec("fixed", count * UNIT_MS[unit])
    assert spec.wire == f"fixed:{count * UNIT_MS[unit]}"
    assert f"{spec.length_ms // UNIT_MS[unit]}{unit}" == text
    assert re.fullmatch(DURATION_PATTERN, text)  # the CRD accepts what the parser does


def test_monthly_and_absent() -> None:
    assert parse_duration("monthly") == MONTHLY
    assert parse_duration("1mo") == MONTHLY
    assert parse_duration("monthly").wire == "monthly"
    assert parse_duration(None) == WindowSpec("none")
    assert parse_duration(None).wire == "none"


@pytest.mark.parametrize(
    "text",
    ["", "0s", "01m", "0w", "1.5h", "0mo", "1month", "1y", "1M", "-1s", " 1s", "1s ", "1", "m",
     "Monthly", "1000000000s", "1 h", "1H", "1sm", "monthly1", "Daily", "day", "weekly ",
     "annually", "biweekly"],
)  # fmt: skip
def test_invalid_durations_raise_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match="budgetDuration"):
        parse_duration(text)


def test_litellm_spellings_are_aliases() -> None:
    """`1w` and `1mo` come from LiteLLM configs; `24h` and `7d` always worked."""
    assert parse_duration("1w") == parse_duration("7d")
    assert parse_duration("2w").length_ms == 14 * UNIT_MS["d"]
    assert parse_duration("1mo") == parse_duration("monthly")


@pytest.mark.parametrize("text", ["2mo", "3mo", "12mo"])
def test_several_months_are_refused_saying_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"budgetDuration .*write 1mo \(or monthly\).*90d"):
        parse_duration(text)


def test_the_error_lists_every_spelling() -> None:
    spellings = r"30d, 1w\), daily, weekly, monthly \(or 1mo\), quarterly or yearly"
    with pytest.raises(ValueError, match=spellings):
        parse_duration("1y")


@given(st.text(max_size=12))
def test_the_parser_accepts_exactly_the_crd_pattern(text: str) -> None:
    if re.fullmatch(DURATION_PATTERN, text):
        parse_duration(text)
    else:
        with pytest.raises(ValueError, match="budgetDuration"):
            parse_duration(text)


@given(FIXED, TIMES, TIMES)
def test_fixed_window_contains_now_and_falls_on_the_anchor(
    spec: WindowSpec, anchor_ms: int, now_ms: int
) -> None:
    window = window_at(spec, anchor_ms, now_ms)
    assert window.start_ms <= now_ms < window.end_ms
    assert window.end_ms - window.start_ms == spec.length_ms
    assert (window.start_ms - anchor_ms) % spec.length_ms == 0


@given(TIMES, TIMES)
def test_monthly_window_is_the_calendar_month(anchor_ms: int, now_ms: int) -> None:
    window = window_at(MONTHLY, anchor_ms, now_ms)
    start, end, now = as_datetime(window.start_ms), as_datetime(window.end_ms), as_datetime(now_ms)
    assert window.start_ms <= now_ms < window.end_ms
    assert (start.year, start.month, start.day, start.hour, start.minute) == (
        now.year, now.month, 1, 0, 0
    )  # fmt: skip
    assert end.day == 1
    assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == 1
    assert window.start_ms % 1000 == window.end_ms % 1000 == 0


@given(TIMES, TIMES)
def test_no_duration_never_resets(anchor_ms: int, now_ms: int) -> None:
    assert window_at(WindowSpec("none"), anchor_ms, now_ms) == Window(0, NEVER)


def test_an_hourly_budget_created_at_10_17_resets_at_11_17() -> None:
    anchor = datetime(2026, 3, 10, 10, 17, tzinfo=UTC)
    now = datetime(2026, 3, 10, 11, 16, 59, 999_000, tzinfo=UTC)
    window = window_at(
        parse_duration("1h"), int(anchor.timestamp() * 1000), int(now.timestamp() * 1000)
    )
    assert as_datetime(window.start_ms) == anchor
    assert as_datetime(window.end_ms) == datetime(2026, 3, 10, 11, 17, tzinfo=UTC)


def test_december_rolls_into_the_next_year() -> None:
    now = int(datetime(2026, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC).timestamp() * 1000)
    window = window_at(MONTHLY, 0, now)
    assert as_datetime(window.end_ms) == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_manifest_with_a_bad_duration_is_refused_saying_what_to_write() -> None:
    with pytest.raises(ValidationError) as refused:
        BudgetSpec.model_validate({"maxBudget": 1, "budgetDuration": "1y"})
    (error,) = refused.value.errors()
    assert error["loc"] == ("budgetDuration",)
    assert "1w), daily, weekly, monthly (or 1mo), quarterly or yearly" in error["msg"]
    assert BudgetSpec.model_validate({"maxBudget": 1, "budgetDuration": "1w"}).budget_duration


def test_the_crd_schema_carries_the_pattern() -> None:
    """The API server refuses a bad duration itself: the pattern is in the schema."""
    schema = BudgetSpec.model_json_schema(by_alias=True)["properties"]["budgetDuration"]
    (duration,) = [option for option in schema["anyOf"] if option.get("type") == "string"]
    assert duration["pattern"] == DURATION_PATTERN
