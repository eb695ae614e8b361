"""Budgets reset at their window's boundary, whatever the traffic: on Redis TIME for
short windows, on the injected clock for the calendar and for anchored fixed windows."""

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

from llmquota.durations import parse_duration, window_at
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

RESET_TOLERANCE_MS = 100


@pytest.mark.parametrize("duration", ["1s", "2s"])
async def test_short_budget_resets_at_its_boundary_on_redis_time(
    store: QuotaStore, duration: str
) -> None:
    # Kubernetes creation timestamps are whole seconds; an odd one puts 2s windows on odd
    # seconds, so the boundary is the anchor's, not the clock's round numbers.
    created_s = (await store.now_ms()) // 1000 - 3
    key = api_key(
        "ticker",
        created=datetime.fromtimestamp(created_s, tz=UTC),
        budget={"maxBudget": 0.01, "budgetDuration": duration},
    )
    policy = policy_for(key)
    exhausting = await attempt(store, policy)
    assert exhausting.admitted
    assert await store.settle(exhausting.request_id, CENT, 100) == 1

    window_of = parse_duration(duration)
    boundary: int | None = None
    while True:
        before_ms = await store.now_ms()
        outcome = await attempt(store, policy)
        after_ms = await store.now_ms()
        if boundary is None:
            assert not outcome.admitted, "the budget was not exhausted"
            boundary = window_at(window_of, created_s * 1000, before_ms).end_ms
            assert (boundary - created_s * 1000) % window_of.length_ms == 0
        if outcome.admitted:
            break
        assert outcome.refusal.limit == "max_budget"
        # No later than the boundary plus the tolerance: the budget did not reset.
        assert before_ms < boundary + RESET_TOLERANCE_MS, "no reset at the boundary"
    # Admitted: not before the boundary (Redis TIME is monotonic enough here) and promptly.
    assert after_ms >= boundary
    assert after_ms - boundary < RESET_TOLERANCE_MS


async def test_monthly_budget_resets_on_the_first_at_midnight_utc(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = policy_for(api_key("monthly", budget={"maxBudget": 0.01, "budgetDuration": "monthly"}))
    clock.set(datetime(2026, 11, 14, 9, 30, tzinfo=UTC))
    spent = await attempt(clocked_store, policy)
    assert await clocked_store.settle(spent.request_id, CENT, 100) == 1

    clock.set(datetime(2026, 11, 30, 23, 59, 59, 999_000, tzinfo=UTC))
    refused = (await attempt(clocked_store, policy)).refusal
    assert refused.status == 402
    assert refused.headers == {"Retry-After": "1"}
    assert refused.message.endswith("resets in 1ms")

    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    assert (await attempt(clocked_store, policy)).admitted


async def test_fixed_window_is_anchored_at_creation(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    created = datetime(2026, 3, 10, 10, 17, tzinfo=UTC)
    key = api_key("hourly", created=created, budget={"maxBudget": 0.01, "budgetDuration": "1h"})
    policy = policy_for(key)
    clock.set(datetime(2026, 3, 10, 10, 30, tzinfo=UTC))
    spent = await attempt(clocked_store, policy)
    assert await clocked_store.settle(spent.request_id, CENT, 100) == 1

    refused = (await attempt(clocked_store, policy)).refusal
    assert refused.headers == {"Retry-After": str(47 * 60)}  # 10:30 -> 11:17

    clock.set(datetime(2026, 3, 10, 11, 16, 59, 999_000, tzinfo=UTC))
    assert not (await attempt(clocked_store, policy)).admitted
    clock.set(datetime(2026, 3, 10, 11, 17, tzinfo=UTC))
    reopened = await attempt(clocked_store, policy)
    assert reopened.admitted
    [counter] = await clocked_store.read_budgets([(policy.scopes[0].tag, policy.scopes[0].id)])
    assert counter.window_start_ms == epoch_ms(datetime(2026, 3, 10, 11, 17, tzinfo=UTC))
    assert (counter.spend_nanos, counter.reserved_nanos) == (0, CENT)


async def test_budget_without_duration_never_resets(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = policy_for(api_key("forever", budget={"maxBudget": 0.01}))
    spent = await attempt(clocked_store, policy)
    assert await clocked_store.settle(spent.request_id, CENT, 100) == 1
    clock.set(datetime(2031, 1, 1, tzinfo=UTC))
    refused = (await attempt(clocked_store, policy)).refusal
    assert refused.headers == {}
    assert refused.message.endswith("never resets")
