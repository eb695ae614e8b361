"""Settle, abort, renew and sweep: what a request's lease holds and when it is freed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tests.integration.store.scenario import (
    CENT,
    ManualClock,
    api_key,
    attempt,
    epoch_ms,
    policy_for,
)

from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import BudgetCounter, QuotaStore

pytestmark = pytest.mark.integration

LEASE_MS = 500


def limited_key(created: datetime = datetime(2026, 3, 10, 10, 17, tzinfo=UTC)) -> ResolvedPolicy:
    """A key with an hourly budget, tpm and one request in flight at most."""
    key = api_key(
        "bot",
        created=created,
        budget={"maxBudget": 1, "budgetDuration": "1h"},
        rateLimit={"tpm": 1000, "maxParallelRequests": 1},
    )
    return policy_for(key)


async def key_budget(store: QuotaStore, policy: ResolvedPolicy) -> BudgetCounter:
    [counter] = await store.read_budgets([(policy.scopes[0].tag, policy.scopes[0].id)])
    return counter


async def remaining_tokens(store: QuotaStore, policy: ResolvedPolicy) -> int:
    """Tokens left this minute as a zero-token request sees them (then freed again)."""
    probe = await attempt(store, policy, tokens=0, cost_nanos=0)
    assert await store.abort(probe.request_id) == 1
    return int(probe.decision.headers["x-ratelimit-remaining-tokens"])


async def test_settle_after_the_window_rolled_charges_the_current_window(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = limited_key()
    clock.set(datetime(2026, 3, 10, 11, 16, 59, tzinfo=UTC))
    in_flight = await attempt(clocked_store, policy, tokens=500)
    assert in_flight.admitted

    clock.set(datetime(2026, 3, 10, 11, 17, 1, tzinfo=UTC))  # new budget window and minute
    assert await clocked_store.settle(in_flight.request_id, CENT, 300) == 1

    counter = await key_budget(clocked_store, policy)
    assert counter.window_start_ms == epoch_ms(datetime(2026, 3, 10, 11, 17, tzinfo=UTC))
    assert (counter.spend_nanos, counter.reserved_nanos) == (CENT, 0)
    assert await remaining_tokens(clocked_store, policy) == 700


async def test_abort_frees_everything_without_charge(clocked_store: QuotaStore) -> None:
    policy = limited_key()
    in_flight = await attempt(clocked_store, policy, tokens=400)
    assert not (await attempt(clocked_store, policy)).admitted  # the one slot is taken

    assert await clocked_store.abort(in_flight.request_id) == 1
    counter = await key_budget(clocked_store, policy)
    assert (counter.spend_nanos, counter.reserved_nanos) == (0, 0)
    assert await remaining_tokens(clocked_store, policy) == 1000
    assert await clocked_store.abort(in_flight.request_id) == 0
    assert await clocked_store.settle(in_flight.request_id, CENT, 10) == 0


async def test_settle_after_the_lease_was_swept_still_charges(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = limited_key()
    in_flight = await attempt(clocked_store, policy, tokens=400, lease_ms=LEASE_MS)
    clock.advance(LEASE_MS - 1)
    assert await clocked_store.sweep() == 0
    clock.advance(1)
    assert await clocked_store.sweep() == 1

    counter = await key_budget(clocked_store, policy)
    assert (counter.spend_nanos, counter.reserved_nanos) == (0, 0)
    assert await remaining_tokens(clocked_store, policy) == 1000  # also frees the slot

    assert await clocked_store.settle(in_flight.request_id, 3 * CENT, 250) == 2
    counter = await key_budget(clocked_store, policy)
    assert (counter.spend_nanos, counter.reserved_nanos) == (3 * CENT, 0)
    assert counter.model_spend_nanos == {"gpt-4o-mini": 3 * CENT}
    assert await remaining_tokens(clocked_store, policy) == 750
    assert await clocked_store.settle(in_flight.request_id, 3 * CENT, 250) == 0


async def test_an_expired_lease_is_freed_by_the_next_admission(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = limited_key()
    assert (await attempt(clocked_store, policy, lease_ms=LEASE_MS)).admitted
    assert not (await attempt(clocked_store, policy)).admitted
    clock.advance(LEASE_MS)
    assert (await attempt(clocked_store, policy)).admitted


async def test_renew_keeps_a_lease_alive_past_its_first_expiry(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = limited_key()
    in_flight = await attempt(clocked_store, policy, lease_ms=LEASE_MS)
    clock.advance(400)
    assert await clocked_store.renew([in_flight.request_id], LEASE_MS) == 1
    clock.advance(400)  # 800 ms: past the first expiry, before the renewed one
    assert await clocked_store.sweep() == 0
    assert not (await attempt(clocked_store, policy)).admitted

    clock.advance(100)  # 900 ms: the renewed lease ran out
    assert await clocked_store.sweep() == 1
    assert await clocked_store.renew([in_flight.request_id], LEASE_MS) == 0
    assert (await key_budget(clocked_store, policy)).reserved_nanos == 0
    assert await clocked_store.settle(in_flight.request_id, CENT, 100) == 2


async def test_renew_counts_only_leases_still_held(clocked_store: QuotaStore) -> None:
    policy = policy_for(api_key("bot"))
    held = await attempt(clocked_store, policy)
    settled = await attempt(clocked_store, policy)
    assert await clocked_store.settle(settled.request_id, CENT, 100) == 1
    assert await clocked_store.renew([held.request_id, settled.request_id, "unknown"], 1000) == 1
    assert await clocked_store.renew([], 1000) == 0


async def test_a_request_estimated_at_zero_cost_settles_and_aborts(
    clocked_store: QuotaStore,
) -> None:
    """A free model (price 0) reserves nothing; freeing nothing must still work."""
    policy = limited_key()
    aborted = await attempt(clocked_store, policy, cost_nanos=0)
    assert await clocked_store.abort(aborted.request_id) == 1
    settled = await attempt(clocked_store, policy, cost_nanos=0)
    assert await clocked_store.settle(settled.request_id, 0, 100) == 1
    counter = await key_budget(clocked_store, policy)
    assert (counter.spend_nanos, counter.reserved_nanos) == (0, 0)
