"""Budget `windows`, `timeZone` and `enforcement`, and RateLimit `enforcement`: what a
manifest may say, and the refusals that name the field."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from pydantic import ValidationError

from llmquota.models import BudgetSpec, RateLimitSpec, TeamSpec
from llmquota.models.budget import MAX_WINDOWS
from llmquota.policy.limits import WindowLimits, nanos
from llmquota.policy.resolve import budget_limits, rate_limits


def refusal(spec: Mapping[str, object]) -> tuple[tuple[object, ...], str]:
    with pytest.raises(ValidationError) as refused:
        BudgetSpec.model_validate(spec)
    (error,) = refused.value.errors()
    return error["loc"], error["msg"]


def test_a_budget_with_a_daily_and_a_monthly_cap_resolves_to_three_windows() -> None:
    spec = BudgetSpec.model_validate(
        {
            "maxBudget": 10,
            "budgetDuration": "30d",
            "timeZone": "Europe/Berlin",
            "windows": [
                {"maxBudget": 2, "budgetDuration": "daily"},
                {"maxBudget": 100, "budgetDuration": "1mo"},
            ],
        }
    )
    limits = budget_limits(spec, anchor_ms=1234)
    assert limits.windows == [
        WindowLimits(max_nanos=nanos(2), window="cal:daily:Europe/Berlin"),
        WindowLimits(max_nanos=nanos(100), window="cal:monthly:Europe/Berlin"),
    ]
    assert [w.duration for w in limits.all_windows] == ["30d", "daily", "monthly"]
    assert limits.anchor_ms == 1234
    assert not limits.audit


def test_an_inline_budget_takes_windows_too() -> None:
    team = TeamSpec.model_validate(
        {"budget": {"maxBudget": 5, "windows": [{"maxBudget": 1, "budgetDuration": "1h"}]}}
    )
    assert team.budget is not None
    assert budget_limits(team.budget, 0).windows == [
        WindowLimits(max_nanos=nanos(1), window="fixed:3600000")
    ]


def test_audit_is_carried_to_the_resolved_limits() -> None:
    budget = BudgetSpec.model_validate({"maxBudget": 1, "enforcement": "Audit"})
    rate = RateLimitSpec.model_validate({"rpm": 1, "enforcement": "Audit"})
    assert budget_limits(budget, 0).audit
    assert rate_limits(rate).audit
    assert not rate_limits(RateLimitSpec.model_validate({"rpm": 1})).audit


def window(duration: str, max_budget: float = 2) -> dict[str, object]:
    return {"maxBudget": max_budget, "budgetDuration": duration}


@pytest.mark.parametrize(
    ("main", "extra"),
    [("1d", ["1d"]), ("24h", ["1d"]), (None, ["monthly", "1mo"]), ("7d", ["1w"])],
)
def test_two_windows_of_the_same_length_are_refused(main: str | None, extra: list[str]) -> None:
    spec = {"maxBudget": 1, "budgetDuration": main, "windows": [window(d) for d in extra]}
    _, message = refusal(spec)
    assert "same window as" in message
    assert "windows[" in message


def test_daily_and_1d_are_different_windows() -> None:
    """`1d` is cut from the subject's creation, `daily` at midnight: both may be given."""
    BudgetSpec.model_validate(
        {"maxBudget": 1, "budgetDuration": "1d", "windows": [window("daily")]}
    )


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/Berln", "utc+1", "../etc/passwd", ""])
def test_an_unknown_time_zone_is_refused_naming_the_field(zone: str) -> None:
    location, message = refusal({"maxBudget": 1, "budgetDuration": "daily", "timeZone": zone})
    assert location == ("timeZone",)
    assert "timeZone" in message or "pattern" in message or "at least" in message


def test_a_window_needs_a_duration_and_a_max() -> None:
    location, _ = refusal({"maxBudget": 1, "windows": [{"maxBudget": 2}]})
    assert location == ("windows", 0, "budgetDuration")
    location, _ = refusal({"maxBudget": 1, "windows": [{"budgetDuration": "1d"}]})
    assert location == ("windows", 0, "maxBudget")


def test_windows_are_bounded() -> None:
    windows = [{"maxBudget": 1, "budgetDuration": f"{n}h"} for n in range(1, MAX_WINDOWS + 2)]
    location, _ = refusal({"maxBudget": 1, "windows": windows})
    assert location == ("windows",)


@pytest.mark.parametrize("value", ["enforce", "Warn", "DryRun"])
def test_enforcement_is_enforce_or_audit(value: str) -> None:
    location, _ = refusal({"maxBudget": 1, "enforcement": value})
    assert location == ("enforcement",)
    with pytest.raises(ValidationError):
        RateLimitSpec.model_validate({"rpm": 1, "enforcement": value})
