"""BudgetOverrides raise a cap in the admit script itself, by Redis' clock: the increase
holds while the clock is before `expires` and ends at that instant, with no operator or
sidecar running then; an override never creates a cap where a budget only counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.integration.store.scenario import (
    CENT,
    ManualClock,
    api_key,
    attempt,
    budget_override,
    policy_for,
    team,
)

from llmquota.models import BudgetOverride
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(hours=2)


def raise_key(name: str, increase: float, expires: datetime = EXPIRES) -> BudgetOverride:
    return budget_override(
        f"raise-{name}",
        target={"kind": "ApiKey", "name": name},
        increase=increase,
        expires=expires.isoformat(),
        reason="launch week",
    )


async def spend(store: QuotaStore, policy: ResolvedPolicy, times: int) -> int:
    """Admit and settle up to `times` one-cent requests; how many were admitted."""
    admitted = 0
    for _ in range(times):
        outcome = await attempt(store, policy)
        if not outcome.admitted:
            break
        assert await store.settle(outcome.request_id, CENT, 100) == 1
        admitted += 1
    return admitted


async def test_an_override_raises_the_key_cap_until_the_instant_it_expires(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    clock.set(NOW)
    key = api_key("launch", budget={"maxBudget": 0.02})
    override = raise_key("launch", 0.03)
    raised = policy_for(key, overrides=[override])

    # $0.02 + $0.03 = five cents: exactly five one-cent requests, then 402 at the raised cap.
    assert await spend(clocked_store, raised, 10) == 5
    refused = (await attempt(clocked_store, raised)).refusal
    assert refused.status == 402
    assert "max budget 0.05" in refused.message

    # The same policy, one millisecond before expiry: still raised; at expiry: not.
    clock.set(EXPIRES - timedelta(milliseconds=1))
    assert "max budget 0.05" in (await attempt(clocked_store, raised)).refusal.message
    clock.set(EXPIRES)
    assert "max budget 0.02" in (await attempt(clocked_store, raised)).refusal.message


async def test_an_expired_override_is_never_applied(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    clock.set(NOW)
    key = api_key("late", budget={"maxBudget": 0.01})
    policy = policy_for(key, overrides=[raise_key("late", 5, expires=NOW - timedelta(days=1))])
    assert await spend(clocked_store, policy, 5) == 1


async def test_overrides_add_up_and_only_raise_their_own_target(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    clock.set(NOW)
    squad = team("squad", budget={"maxBudget": 0.02})
    key = api_key("member", team="squad", budget={"maxBudget": 1})
    for_team = [
        budget_override(
            f"team-{index}",
            target={"kind": "Team", "name": "squad"},
            increase=0.01,
            expires=EXPIRES.isoformat(),
            reason="two approvals",
        )
        for index in range(2)
    ]
    # An override of another key with the same name as the team changes nothing.
    stray = raise_key("squad", 100)
    policy = policy_for(key, squad, overrides=[*for_team, stray])
    assert await spend(clocked_store, policy, 10) == 4
    assert "team squad" in (await attempt(clocked_store, policy)).refusal.message


async def test_an_override_does_not_cap_a_budget_that_only_counts(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    clock.set(NOW)
    key = api_key("uncapped")  # no budget: spend is counted, never refused
    policy = policy_for(key, overrides=[raise_key("uncapped", 0.01)])
    assert await spend(clocked_store, policy, 5) == 5
