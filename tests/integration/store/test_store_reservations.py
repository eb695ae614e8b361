"""Honest reservations on a real redis-server: one key's in-flight requests cannot lock its
teammates (or everyone under the global budget) out, amounts stay Redis integers, and the
scripts write all of an operation or nothing of it."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError
from tests.integration.store.scenario import (
    CENT,
    ManualClock,
    api_key,
    attempt,
    budget,
    policy_for,
    team,
)

from llmquota.policy import keyspace
from llmquota.policy.admission import MAX_AMOUNT
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

ROOMY = {"maxBudget": 1000, "budgetDuration": "30d"}
HUGE = nanos(128_000)  # max_tokens=1e7, n=128 on gpt-4o, as the old estimate reserved it


def teammates() -> tuple[ResolvedPolicy, ResolvedPolicy]:
    """Two keys of team qa ($100 a month) under a global budget of $1000, each its own $1000."""
    everything = budget("everything", maxBudget=1000, budgetDuration="monthly")
    qa = team("qa", budget={"maxBudget": 100, "budgetDuration": "30d"})
    greedy = policy_for(api_key("greedy", team="qa", budget=ROOMY), qa, global_budget=everything)
    other = policy_for(api_key("other", team="qa", budget=ROOMY), qa, global_budget=everything)
    return greedy, other


async def reserved(store: QuotaStore, policy: ResolvedPolicy, kind: str) -> tuple[int, int]:
    """(spend, reserved) in the counter of the policy's scope of `kind`."""
    scope = next(scope for scope in policy.scopes if scope.kind == kind)
    [counter] = await store.read_budgets([(scope.tag, scope.id)])
    return counter.spend_nanos, counter.reserved_nanos


async def test_a_huge_request_cannot_lock_the_team_out(clocked_store: QuotaStore) -> None:
    greedy, other = teammates()
    # Admitted, holding half of what the team (and the global budget) has left.
    huge = await attempt(clocked_store, greedy, cost_nanos=HUGE)
    assert huge.admitted
    assert await reserved(clocked_store, greedy, "team") == (0, nanos(50))
    assert await reserved(clocked_store, greedy, "global") == (0, nanos(500))
    assert await reserved(clocked_store, greedy, "key") == (0, HUGE)

    more = (await attempt(clocked_store, greedy, cost_nanos=CENT)).refusal
    assert (more.status, more.limit, more.scope_label) == (402, "key_share", "the global budget")
    assert more.headers == {"Retry-After": "1"}
    assert "this key already holds 500.00 in flight there" in more.message
    # Only one request at a time may hold less than its worst case.
    second_cap = (await attempt(clocked_store, other, cost_nanos=nanos(30))).refusal
    assert second_cap.limit == "key_share"
    assert "another request there already holds less than its worst case" in second_cap.message
    # The teammate, with nothing spent, is served up to half of what is left.
    assert (await attempt(clocked_store, other, cost_nanos=nanos(25))).admitted
    assert await reserved(clocked_store, other, "team") == (0, nanos(75))

    assert await clocked_store.settle(huge.request_id, CENT, 100) == 1
    assert await reserved(clocked_store, other, "team") == (CENT, nanos(25))
    assert (await attempt(clocked_store, greedy, cost_nanos=nanos(30))).admitted


async def test_a_keys_own_budget_is_not_shared(clocked_store: QuotaStore) -> None:
    alone = policy_for(api_key("alone", budget={"maxBudget": 1, "budgetDuration": "1h"}))
    assert (await attempt(clocked_store, alone, cost_nanos=nanos(0.9))).admitted
    assert (await attempt(clocked_store, alone, cost_nanos=nanos(0.09))).admitted


async def test_an_amount_past_redis_integers_is_held_to_the_cap(clocked_store: QuotaStore) -> None:
    """1e17 nano-USD once made HINCRBY fail "not an integer" midway through admission."""
    rich = policy_for(api_key("rich", budget={"maxBudget": 10**9, "budgetDuration": "1h"}))
    admitted = await attempt(clocked_store, rich, cost_nanos=10**17, tokens=10**30)
    assert admitted.admitted
    assert await reserved(clocked_store, rich, "key") == (0, MAX_AMOUNT)
    assert await clocked_store.settle(admitted.request_id, 10**17, 10**30) == 1
    assert await reserved(clocked_store, rich, "key") == (MAX_AMOUNT, 0)


@pytest.mark.parametrize("cost", ["abc", "-5", "1.5", "nan", "inf", "1e308", str(10**17)])
async def test_a_malformed_settle_writes_nothing(
    clocked_store: QuotaStore, clock: ManualClock, cost: str
) -> None:
    """Redis does not roll a script back: a settle that failed after freeing the
    reservation used to leave `resv` freed, and the sweep then freed it a second time."""
    greedy, other = teammates()
    held = await attempt(clocked_store, greedy, cost_nanos=CENT)
    before = await clocked_store.redis.hgetall(_team_key(greedy))

    with pytest.raises(ResponseError, match="nothing was written"):
        await clocked_store.redis.evalsha(
            clocked_store._scripts.settle.sha, 0, held.request_id, cost, 100, clock()
        )

    assert await clocked_store.redis.hgetall(_team_key(greedy)) == before
    clock.advance(60_000)
    assert await clocked_store.sweep() == 1
    assert await reserved(clocked_store, other, "team") == (0, 0)
    assert await clocked_store.settle(held.request_id, CENT, 100) == 2
    assert await reserved(clocked_store, other, "team") == (CENT, 0)
    assert await clocked_store.redis.hget(_team_key(greedy), f"k:{greedy.key_hash}") is None


async def test_a_malformed_admission_writes_nothing(clocked_store: QuotaStore) -> None:
    await clocked_store.redis.set("marker", "1")
    spec = '{"id":"x","lease_ms":1000,"model":"m","cost":1e17,"tokens":1,"kf":"k:x",'
    spec += '"share":0.5,"checks":[]}'
    with pytest.raises(ResponseError, match="cost must be an integer"):
        await clocked_store.redis.evalsha(clocked_store._scripts.admit.sha, 0, spec, 0)
    assert await clocked_store.redis.keys("*") == [b"marker"]


async def test_settle_abort_and_sweep_release_a_reservation_once(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    greedy, other = teammates()
    swept = await attempt(clocked_store, greedy, cost_nanos=CENT, lease_ms=1000)
    kept = await attempt(clocked_store, other, cost_nanos=CENT)
    clock.advance(1001)
    assert await clocked_store.sweep() == 1
    assert await clocked_store.abort(swept.request_id) == 0
    assert await clocked_store.settle(swept.request_id, CENT, 1) == 0
    assert await reserved(clocked_store, other, "team") == (0, CENT)
    assert await clocked_store.settle(kept.request_id, CENT, 1) == 1
    assert await clocked_store.settle(kept.request_id, CENT, 1) == 0
    assert await reserved(clocked_store, other, "team") == (CENT, 0)


def _team_key(policy: ResolvedPolicy) -> str:
    scope = next(scope for scope in policy.scopes if scope.kind == "team")
    return keyspace.budget_key(scope.tag, scope.id)
