"""Standalone mode's store guard: the generation marker and first-load times are first
writer wins, and a spend snapshot is added back once per generation, only into the window
it counted, on top of what was charged since the wipe."""

from __future__ import annotations

import pytest
from tests.integration.store.scenario import CENT, ManualClock, api_key, attempt, policy_for

from llmquota.store import BudgetCounter, QuotaStore

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


async def test_the_first_generation_and_creation_times_win(clocked_store: QuotaStore) -> None:
    assert await clocked_store.generation() is None
    assert await clocked_store.claim_generation("1001") == "1001"
    assert await clocked_store.claim_generation("2002") == "1001"
    assert await clocked_store.claim_created({"Team default/qa": 5}) == {"Team default/qa": 5}
    assert await clocked_store.claim_created({"Team default/qa": 9, "ApiKey default/b": 7}) == {
        "Team default/qa": 5,
        "ApiKey default/b": 7,
    }
    await clocked_store.redis.flushall()
    assert await clocked_store.generation() is None


async def test_a_snapshot_is_added_once_per_generation_into_its_window(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = policy_for(api_key("bot", budget={"maxBudget": 1, "budgetDuration": "30d"}))
    (scope,) = [scope for scope in policy.scopes if scope.kind == "key"]
    assert scope.budget is not None
    charged = await attempt(clocked_store, policy)
    assert await clocked_store.settle(charged.request_id, CENT, 10) == 1
    marker, (counter,) = await clocked_store.generation_and_budgets([(scope.tag, scope.id)])
    assert marker is None
    assert counter.spend_nanos == CENT

    await clocked_store.redis.flushall()
    since = await attempt(clocked_store, policy)  # admitted after the wipe, before the restore
    assert await clocked_store.settle(since.request_id, CENT, 10) == 1
    restore = clocked_store.restore_budget
    assert await restore(scope.tag, scope.id, scope.budget, counter, "1001")
    assert not await restore(scope.tag, scope.id, scope.budget, counter, "1001")  # a replica
    (after,) = await clocked_store.read_budgets([(scope.tag, scope.id)])
    assert after.spend_nanos == 2 * CENT

    clock.advance(31 * DAY_MS)  # the snapshot's window is over: nothing to restore
    assert not await restore(scope.tag, scope.id, scope.budget, counter, "2002")
    assert not await restore(scope.tag, scope.id, scope.budget, BudgetCounter(None), "2002")
