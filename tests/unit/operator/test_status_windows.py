"""A subject's status with several windows: every window listed (the main one first),
the tightest one picked for kubectl's columns, BudgetExceeded naming the window that ran
out, and an audited budget reported exhausted while nothing is refused."""

from __future__ import annotations

from llmquota.operator.rules.status_view import (
    BudgetView,
    GuardView,
    budget_observations,
    budget_view,
    window_view,
    windows_fields,
)
from llmquota.policy.limits import BudgetIncrease, BudgetLimits, WindowLimits, nanos
from llmquota.store import BudgetCounter

HOUR = 3_600_000
ANCHOR = 1_000 * HOUR
NOW = ANCHOR + 50 * HOUR + 30 * 60_000
LIMITS = BudgetLimits(
    max_nanos=nanos(10),
    window=f"fixed:{30 * 24 * HOUR}",
    anchor_ms=ANCHOR,
    windows=[
        WindowLimits(max_nanos=nanos(2), window="cal:daily:UTC"),
        WindowLimits(max_nanos=nanos(0.5), window=f"fixed:{HOUR}"),
    ],
)


def counter(start_ms: int, spend_usd: float) -> BudgetCounter:
    return BudgetCounter(start_ms, nanos(spend_usd), 0)


def period_start(limits: BudgetLimits, window: str) -> int:
    return limits.period_at(window, NOW).start_ms


def views(
    spend: tuple[float, float, float], limits: BudgetLimits = LIMITS
) -> tuple[BudgetView, list[BudgetView]]:
    main = budget_view(limits, counter(ANCHOR, spend[0]), NOW)
    further = [
        window_view(limits, window, counter(period_start(limits, window.window), used), NOW)
        for window, used in zip(limits.windows, spend[1:], strict=True)
    ]
    return main, further


def test_every_window_is_listed_and_the_tightest_is_picked() -> None:
    main, further = views((3, 1.5, 0.1))
    fields = windows_fields(main, further)
    assert [w["budgetDuration"] for w in fields["windows"]] == ["30d", "daily", "1h"]
    assert [w["remaining"] for w in fields["windows"]] == [7, 0.5, 0.4]
    assert fields["windows"][1]["resetAt"] == "1970-02-14T00:00:00Z"
    assert fields["windows"][2]["resetAt"] == "1970-02-13T19:00:00Z"
    assert fields["tightestWindow"] == fields["windows"][2]


def test_a_window_of_a_past_period_counts_as_empty() -> None:
    window = LIMITS.windows[1]
    stale = window_view(LIMITS, window, counter(ANCHOR, 0.5), NOW)
    assert stale.spend_nanos == 0
    assert stale.window.start_ms == ANCHOR + 50 * HOUR


def test_an_override_raises_every_window() -> None:
    raised = LIMITS.model_copy(
        update={"increases": [BudgetIncrease(name="launch", nanos=nanos(1), expires_ms=NOW + 1)]}
    )
    main, further = views((0, 0, 0), raised)
    assert [view.max_nanos for view in (main, *further)] == [nanos(11), nanos(3), nanos(1.5)]


def test_budget_exceeded_names_the_window_that_ran_out() -> None:
    main, further = views((3, 2, 0.1))
    exceeded = budget_observations(main, (), further)[0]
    assert (exceeded.status, exceeded.reason) == ("True", "BudgetExhausted")
    assert exceeded.message.startswith("daily window: spend 2 USD of maxBudget 2 USD")
    main, further = views((3, 1, 0.1))
    assert budget_observations(main, (), further)[0].status == "False"


def test_a_guards_window_refuses_the_key() -> None:
    main, further = views((0, 0, 0))
    day = LIMITS.windows[0]
    full_day = window_view(LIMITS, day, counter(period_start(LIMITS, day.window), 2), NOW)
    guard = GuardView("team", "team qa (daily window)", full_day)
    exceeded = budget_observations(main, [guard], further)[0]
    assert exceeded.reason == "TeamBudgetExhausted"
    assert exceeded.message.startswith("refused by team qa (daily window): spend 2 USD")


def test_an_audited_budget_is_reported_exhausted_saying_nothing_is_refused() -> None:
    audited = LIMITS.model_copy(update={"audit": True, "windows": []})
    main = budget_view(audited, counter(ANCHOR, 10), NOW)
    exceeded = budget_observations(main)[0]
    assert (exceeded.status, exceeded.reason) == ("True", "BudgetExhausted")
    assert exceeded.message.endswith("enforcement Audit: reported, requests are not refused")
