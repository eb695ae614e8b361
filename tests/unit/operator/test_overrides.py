"""The operator's view of a BudgetOverride: its Active condition, the Events that mark
its apply and expiry, and the target's list of active overrides; pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.integration.store.scenario import api_key, budget_override, team

from llmquota.models import BudgetOverride
from llmquota.operator.rules.conditions import Transition
from llmquota.operator.rules.overrides import (
    active_overrides,
    override_events,
    override_observation,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def override(
    name: str = "launch", kind: str = "ApiKey", target: str = "bot", *, hours: float = 1
) -> BudgetOverride:
    return budget_override(
        name,
        target={"kind": kind, "name": target},
        increase=50,
        expires=(NOW + timedelta(hours=hours)).isoformat(),
        reason="launch week",
    )


@pytest.mark.parametrize(
    ("hours", "found", "capped", "status", "reason"),
    [
        (1, True, True, "True", "Applied"),
        (0, True, True, "False", "Expired"),  # expires == now: over
        (-1, False, False, "False", "Expired"),  # expiry is said first
        (1, False, False, "False", "TargetNotFound"),
        (1, True, False, "False", "TargetHasNoBudget"),
    ],
)
def test_active_says_whether_and_why(
    hours: float, found: bool, capped: bool, status: str, reason: str
) -> None:
    observed = override_observation(override(hours=hours), found, capped, NOW)
    assert (observed.type, observed.status, observed.reason) == ("Active", status, reason)


def test_the_applied_message_names_target_amount_and_expiry() -> None:
    observed = override_observation(override(), True, True, NOW)
    assert observed.message == "maxBudget of ApiKey bot raised by $50 until 2026-12-01T13:00:00Z"


def test_events_mark_the_apply_and_the_expiry_once() -> None:
    def flip(status: str, reason: str, previous: str | None) -> Transition:
        return Transition("Active", status, reason, "m", previous)  # type: ignore[arg-type]

    assert override_events([flip("True", "Applied", None)]) == [("Normal", "Applied", "m")]
    assert override_events([flip("False", "Expired", "True")]) == [("Normal", "Expired", "m")]
    # Created already expired: not news worth an Expired Event (the condition says it).
    assert override_events([flip("False", "Expired", None)]) == []
    assert override_events([flip("False", "TargetNotFound", None)]) == [
        ("Warning", "TargetNotFound", "m")
    ]
    assert override_events([Transition("Ready", "True", "Valid", "m", None)]) == []


def test_a_target_lists_its_own_unexpired_overrides() -> None:
    listed = [
        override("b-second"),
        override("a-first"),
        override("gone", hours=-1),
        override("for-team", kind="Team", target="bot"),
        override("other", target="other-key"),
    ]
    names = [o["name"] for o in active_overrides(listed, api_key("bot"), NOW)]
    assert names == ["a-first", "b-second"]
    assert [o["name"] for o in active_overrides(listed, team("bot"), NOW)] == ["for-team"]
