"""rpm, tpm and maxParallelRequests, counted atomically in Redis."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest
from tests.integration.store.scenario import (
    ManualClock,
    api_key,
    attempt,
    policy_for,
)

from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration


async def test_rpm_admits_exactly_the_limit_and_names_the_retry(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = policy_for(api_key("bot", rateLimit={"rpm": 60}))
    attempts = [await attempt(clocked_store, policy) for _ in range(60)]
    assert all(item.admitted for item in attempts)
    assert attempts[-1].decision.headers["x-ratelimit-remaining-requests"] == "0"

    refused = (await attempt(clocked_store, policy)).refusal
    assert (refused.status, refused.code, refused.limit) == (429, "rate_limit_exceeded", "rpm")
    assert refused.scope_label == "key bot"
    minute_end = (clock.now_ms // 60_000 + 1) * 60_000
    assert refused.headers["Retry-After"] == str(math.ceil((minute_end - clock.now_ms) / 1000))
    assert refused.headers["Retry-After"] == "40"  # 12:00:20.250 -> 12:01:00
    assert "requests per minute (rpm) is 60, used 60" in refused.message

    clock.now_ms = minute_end - 1
    assert not (await attempt(clocked_store, policy)).admitted
    clock.now_ms = minute_end
    assert (await attempt(clocked_store, policy)).admitted


async def test_rpm_holds_under_concurrent_admissions(clocked_store: QuotaStore) -> None:
    policy = policy_for(api_key("bot", rateLimit={"rpm": 60}))
    attempts = await asyncio.gather(*(attempt(clocked_store, policy) for _ in range(100)))
    assert sum(item.admitted for item in attempts) == 60


async def test_tpm_counts_input_plus_output_and_settlement_corrects_it(
    clocked_store: QuotaStore,
) -> None:
    policy = policy_for(api_key("bot", rateLimit={"tpm": 1000}))

    first = await attempt(clocked_store, policy, tokens=400)
    assert first.decision.headers["x-ratelimit-remaining-tokens"] == "600"
    # The real request used 60 prompt + 40 completion tokens: only those count.
    assert await clocked_store.settle(first.request_id, 0, 60 + 40) == 1

    second = await attempt(clocked_store, policy, tokens=400)
    assert second.decision.headers["x-ratelimit-remaining-tokens"] == "500"
    assert await clocked_store.settle(second.request_id, 0, 300 + 650) == 1

    refused = (await attempt(clocked_store, policy, tokens=1)).refusal
    assert (refused.limit, refused.status) == ("tpm", 429)
    assert "tokens per minute (tpm) is 1000, used 1050" in refused.message


async def test_per_model_rpm_leaves_other_models_alone(clocked_store: QuotaStore) -> None:
    policy = policy_for(api_key("bot", rateLimit={"models": {"gpt-4o": {"rpm": 2}}}))
    for _ in range(2):
        assert (await attempt(clocked_store, policy, model="gpt-4o")).admitted
    assert (await attempt(clocked_store, policy, model="gpt-4o")).refusal.limit == "model_rpm"
    assert (await attempt(clocked_store, policy, model="gpt-4o-mini")).admitted


async def test_max_parallel_admits_exactly_n_at_once_and_frees_on_settle_and_abort(
    clocked_store: QuotaStore,
) -> None:
    policy = policy_for(api_key("bot", rateLimit={"maxParallelRequests": 3}))
    attempts = await asyncio.gather(*(attempt(clocked_store, policy) for _ in range(12)))
    admitted = [item for item in attempts if item.admitted]
    assert len(admitted) == 3
    refusal = next(item for item in attempts if not item.admitted).refusal
    assert (refusal.limit, refusal.status) == ("max_parallel_requests", 429)

    assert await clocked_store.settle(admitted[0].request_id, 0, 10) == 1
    replacement = await attempt(clocked_store, policy)
    assert replacement.admitted
    assert not (await attempt(clocked_store, policy)).admitted

    assert await clocked_store.abort(admitted[1].request_id) == 1
    assert (await attempt(clocked_store, policy)).admitted
    assert not (await attempt(clocked_store, policy)).admitted


async def test_rate_counters_roll_with_the_minute_not_with_admissions(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    policy = policy_for(api_key("bot", rateLimit={"rpm": 1}))
    clock.set(datetime(2026, 3, 10, 12, 0, 59, 999_000, tzinfo=UTC))
    assert (await attempt(clocked_store, policy)).admitted
    refused = (await attempt(clocked_store, policy)).refusal
    assert refused.headers["Retry-After"] == "1"
    clock.advance(1)
    assert (await attempt(clocked_store, policy)).admitted
