"""Counters + limits -> status fields, conditions, seeds, and minimal merge patches."""

from __future__ import annotations

from datetime import UTC, datetime

from llmquota.durations import NEVER, Window
from llmquota.operator.rules.conditions import Observation
from llmquota.operator.rules.status_view import (
    GuardView,
    Seed,
    budget_observations,
    budget_view,
    ended_spend,
    key_state_observations,
    merge_patch,
    reset_worth_telling,
    seed_from_status,
    status_patch,
    subject_status_fields,
)
from llmquota.policy.limits import BudgetLimits, nanos, window_spec
from llmquota.store import BudgetCounter

HOUR = 3_600_000
ANCHOR = 1_700_000_000_000
LIMITS = BudgetLimits(
    max_nanos=nanos(10), soft_nanos=nanos(8), window=f"fixed:{HOUR}", anchor_ms=ANCHOR
)


def test_window_spec_round_trips_the_wire_form() -> None:
    assert window_spec(f"fixed:{HOUR}").length_ms == HOUR
    assert window_spec("monthly").unit == "monthly"
    assert window_spec("none").kind == "none"


def test_fresh_counter_gives_spend_remaining_and_reset_time() -> None:
    now = ANCHOR + HOUR + 10
    counter = BudgetCounter(ANCHOR + HOUR, nanos(2.5), 0, {"gpt-4o": nanos(2.5)})
    fields = subject_status_fields(budget_view(LIMITS, counter, now))
    assert fields == {
        "spend": 2.5,
        "maxBudget": 10.0,
        "remaining": 7.5,
        "budgetResetAt": "2023-11-15T00:13:20Z",
        "modelSpend": {"gpt-4o": 2.5},
    }


def test_counter_of_an_earlier_window_counts_as_zero() -> None:
    now = ANCHOR + 2 * HOUR + 10
    view = budget_view(LIMITS, BudgetCounter(ANCHOR + HOUR, nanos(9), 0, {"m": 1}), now)
    assert view.spend_nanos == 0
    assert view.model_spend_nanos == {}
    assert view.window == Window(ANCHOR + 2 * HOUR, ANCHOR + 3 * HOUR)


def test_count_only_budget_has_no_max_or_remaining_or_reset() -> None:
    limits = BudgetLimits(max_nanos=-1)
    view = budget_view(limits, BudgetCounter(0, nanos(1)), ANCHOR)
    fields = subject_status_fields(view)
    assert fields["maxBudget"] is None
    assert fields["remaining"] is None
    assert fields["budgetResetAt"] is None
    assert fields["spend"] == 1.0
    assert [o.reason for o in budget_observations(view)] == ["NoBudget", "NoSoftBudget"]


def test_budget_conditions_at_soft_and_hard_limits() -> None:
    now = ANCHOR + 1
    soft = budget_view(LIMITS, BudgetCounter(ANCHOR, nanos(8)), now)
    assert [o.status for o in budget_observations(soft)] == ["False", "True"]
    hard = budget_view(LIMITS, BudgetCounter(ANCHOR, nanos(10)), now)
    assert [o.status for o in budget_observations(hard)] == ["True", "True"]
    assert subject_status_fields(hard)["remaining"] == 0.0


def test_key_state_observations() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    expired, blocked = key_state_observations(
        expires=datetime(2026, 1, 1, tzinfo=UTC), blocked=True, now=now
    )
    assert (expired.status, expired.reason) == ("True", "KeyExpired")
    assert (blocked.status, blocked.reason) == ("True", "KeyBlocked")
    fine = key_state_observations(expires=None, blocked=False, now=now)
    assert [o.status for o in fine] == ["False", "False"]


def test_seed_from_status_of_the_current_window() -> None:
    now = ANCHOR + 10
    status = {"spend": 3.0, "budgetResetAt": "2023-11-14T23:13:20Z", "modelSpend": {"m": 3.0}}
    assert seed_from_status(LIMITS, status, now) == Seed(
        Window(ANCHOR, ANCHOR + HOUR), nanos(3), {"m": nanos(3)}
    )


def test_no_seed_from_a_status_of_an_earlier_window_or_without_spend() -> None:
    later = ANCHOR + HOUR + 10
    status = {"spend": 3.0, "budgetResetAt": "2023-11-14T23:13:20Z"}
    assert seed_from_status(LIMITS, status, later) is None
    assert seed_from_status(LIMITS, {}, ANCHOR) is None


def test_seed_of_a_never_resetting_budget() -> None:
    seed = seed_from_status(BudgetLimits(max_nanos=5), {"spend": 1.0}, ANCHOR)
    assert seed == Seed(Window(0, NEVER), nanos(1), {})


def test_merge_patch_is_empty_when_nothing_changed() -> None:
    current = {"spend": 1.0, "modelSpend": {"a": 1.0}, "keys": 2}
    assert merge_patch(current, {"spend": 1.0, "modelSpend": {"a": 1.0}}) == {}


def test_merge_patch_nulls_removed_nested_keys_and_missing_fields() -> None:
    current = {"spend": 1.0, "modelSpend": {"a": 1.0, "b": 2.0}, "maxBudget": 3.0}
    patch = merge_patch(current, {"spend": 0.0, "modelSpend": {}, "maxBudget": None})
    assert patch == {"spend": 0.0, "modelSpend": {"a": None, "b": None}, "maxBudget": None}
    assert merge_patch({}, {"modelSpend": {"a": 1.0}}) == {"modelSpend": {"a": 1.0}}


def test_status_patch_twice_is_empty_the_second_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    observations = key_state_observations(expires=None, blocked=False, now=now)
    first = status_patch({}, {"keyHint": "sk-...abcd"}, observations, generation=1, now=now)
    assert first.patch["keyHint"] == "sk-...abcd"
    assert len(first.transitions) == 2
    second = status_patch(
        first.patch, {"keyHint": "sk-...abcd"}, observations, generation=1, now=now
    )
    assert second.patch == {}
    assert second.transitions == []
    assert second.conditions == first.conditions


def test_known_conditions_win_over_a_stale_status() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    written = status_patch({}, {}, [Observation("Ready", "True", "Applied")], generation=1, now=now)
    # A timer whose body predates that write must not drop Ready from the list.
    stale_timer = status_patch(
        {},
        {},
        key_state_observations(expires=None, blocked=False, now=now),
        generation=1,
        now=now,
        known_conditions=written.conditions,
    )
    assert [c["type"] for c in stale_timer.patch["conditions"]] == ["Ready", "Expired", "Blocked"]
    assert stale_timer.transitions[0].type == "Expired"


def test_budget_exceeded_counts_what_is_reserved_in_flight_as_admission_does() -> None:
    now = ANCHOR + 1
    # 9 USD settled + 1 USD reserved: admission refuses, so the status says exceeded.
    view = budget_view(LIMITS, BudgetCounter(ANCHOR, nanos(9), nanos(1)), now)
    exceeded = budget_observations(view)[0]
    assert (exceeded.status, exceeded.reason) == ("True", "BudgetExhausted")
    assert exceeded.message == "spend 9 USD (+1 USD reserved in flight) of maxBudget 10 USD"
    assert subject_status_fields(view)["remaining"] == 1.0  # remaining is settled spend
    # The reservation of an earlier window is gone with its spend.
    stale = budget_view(LIMITS, BudgetCounter(ANCHOR - HOUR, nanos(9), nanos(1)), now)
    assert budget_observations(stale)[0].status == "False"


def test_a_key_refused_by_a_wider_scope_says_which() -> None:
    now = ANCHOR + 1
    own = budget_view(LIMITS, BudgetCounter(ANCHOR, nanos(1)), now)
    team_limits = BudgetLimits(max_nanos=nanos(5), window=f"fixed:{HOUR}", anchor_ms=ANCHOR)
    team_full = budget_view(team_limits, BudgetCounter(ANCHOR, nanos(5)), now)
    team_ok = budget_view(team_limits, BudgetCounter(ANCHOR, nanos(1)), now)
    global_full = budget_view(team_limits, BudgetCounter(ANCHOR, nanos(4), nanos(2)), now)
    exceeded = budget_observations(own, [GuardView("team", "team qa", team_full)])[0]
    assert (exceeded.status, exceeded.reason) == ("True", "TeamBudgetExhausted")
    assert exceeded.message == "refused by team qa: spend 5 USD of maxBudget 5 USD"
    # Widest first, as admission checks: the global budget is named before the team.
    widest = budget_observations(
        own,
        [
            GuardView("global", "the global budget", global_full),
            GuardView("team", "team qa", team_full),
        ],
    )[0]
    assert widest.reason == "GlobalBudgetExhausted"
    assert widest.message.startswith("refused by the global budget: spend 4 USD (+2 USD")
    fine = budget_observations(own, [GuardView("team", "team qa", team_ok)])[0]
    assert (fine.status, fine.reason) == ("False", "WithinBudget")


def test_only_a_reset_with_spend_in_the_ended_window_is_told() -> None:
    now = ANCHOR + HOUR + 1
    view = budget_view(LIMITS, BudgetCounter(ANCHOR + HOUR, 0), now)
    last_window = Window(ANCHOR, ANCHOR + HOUR)
    assert ended_spend(None, view) is None  # first sight: no reset to tell
    assert ended_spend(Seed(view.window, 5), view) is None  # same window
    assert ended_spend(Seed(last_window, 0), view) == 0
    assert ended_spend(Seed(last_window, nanos(2)), view) == nanos(2)
    assert reset_worth_telling([0, 0, None]) is None  # a boundary with nothing spent
    assert reset_worth_telling([None]) is None
    # A team and two members reset together: one Event, with the team's spend.
    assert reset_worth_telling([nanos(3), nanos(1), nanos(2)]) == nanos(3)
