"""Redis killed with SIGKILL and restarted on the same data, at the store level.

What must hold: settled spend survives (append-only file), a client from before the
crash works again once Redis is back without being rebuilt (connection pool, scripts
reloaded after NOSCRIPT), and reservations held at the crash free themselves when their
leases run out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from tests.reliability.harness import admit_once, policies_from_yaml, wait_until
from tests.reliability.rig import CrashableRedis

from llmquota.policy import keyspace
from llmquota.policy.decision import Admitted
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore, StoreError, StoreUnavailable

pytestmark = pytest.mark.integration

MANIFESTS = """
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: qa}
spec:
  budget: {maxBudget: 100, budgetDuration: 30d}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: qa-bot}
spec:
  team: qa
  rateLimit: {maxParallelRequests: 50}
---
apiVersion: v1
kind: Secret
metadata: {name: qa-bot}
stringData: {key: sk-reliability-crash-0001}
"""
COST_NANOS = 1_234_567
TOKENS = 10


@pytest.fixture
def policy() -> ResolvedPolicy:
    return policies_from_yaml(MANIFESTS)["qa-bot"]


@pytest.fixture
async def crash_store(crashable_redis: CrashableRedis) -> AsyncIterator[QuotaStore]:
    """A store on the crashable Redis that fails fast while Redis is down."""
    quota_store = QuotaStore.from_url(
        crashable_redis.url, socket_connect_timeout=0.5, socket_timeout=2
    )
    yield quota_store
    await quota_store.close()


def budget_scopes(policy: ResolvedPolicy) -> list[tuple[str, str]]:
    return [(scope.tag, scope.id) for scope in policy.scopes if scope.budget is not None]


async def spent_and_reserved(store: QuotaStore, policy: ResolvedPolicy) -> list[tuple[int, int]]:
    counters = await store.read_budgets(budget_scopes(policy))
    return [(counter.spend_nanos, counter.reserved_nanos) for counter in counters]


async def in_flight(store: QuotaStore, policy: ResolvedPolicy) -> int:
    key_scope = next(scope for scope in policy.scopes if scope.kind == "key")
    held = await store.redis.hget(keyspace.parallel_key(key_scope.tag, key_scope.id), "all")
    return int(held or 0)


async def settle_one(store: QuotaStore, policy: ResolvedPolicy) -> None:
    request_id, decision = await admit_once(store, policy, cost_nanos=COST_NANOS)
    assert isinstance(decision, Admitted)
    assert await store.settle(request_id, COST_NANOS, TOKENS) == 1


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
async def test_settled_spend_survives_kill_9(
    crashable_redis: CrashableRedis,
    crash_store: QuotaStore,
    policy: ResolvedPolicy,
    appendfsync: str,
) -> None:
    await crash_store.redis.config_set("appendfsync", appendfsync)
    await crash_store.put_policy(policy)
    for _ in range(5):
        await settle_one(crash_store, policy)

    async def aof_written() -> bool:
        # Written to the kernel (not yet fsynced with everysec) survives a process kill.
        persistence = await crash_store.redis.info("persistence")
        return int(persistence["aof_buffer_length"]) == 0

    await wait_until(aof_written, timeout_s=5)
    await asyncio.to_thread(crashable_redis.kill)
    await asyncio.to_thread(crashable_redis.restart)

    assert await spent_and_reserved(crash_store, policy) == [(5 * COST_NANOS, 0)] * 2
    assert await crash_store.get_policy(policy.key_hash) == policy


async def test_reservations_held_at_the_crash_expire_with_their_leases(
    crashable_redis: CrashableRedis, crash_store: QuotaStore, policy: ResolvedPolicy
) -> None:
    await crash_store.redis.config_set("appendfsync", "always")
    await crash_store.put_policy(policy)
    for _ in range(3):
        _, decision = await admit_once(crash_store, policy, cost_nanos=COST_NANOS, lease_ms=1000)
        assert isinstance(decision, Admitted)
    assert await in_flight(crash_store, policy) == 3

    await asyncio.to_thread(crashable_redis.kill)
    await asyncio.to_thread(crashable_redis.restart)
    assert await spent_and_reserved(crash_store, policy) == [(0, 3 * COST_NANOS)] * 2

    async def freed() -> bool:
        await crash_store.sweep()
        return await in_flight(crash_store, policy) == 0

    await wait_until(freed, timeout_s=5)
    assert await spent_and_reserved(crash_store, policy) == [(0, 0)] * 2


@dataclass
class Traffic:
    """What a request loop saw: settles Redis acknowledged, in doubt, and errors."""

    acknowledged: int = 0
    in_doubt: int = 0
    errors: list[BaseException] = field(default_factory=list)
    # Stopped by a flag, not by cancelling: redis-py may turn a cancellation inside a
    # command into a ConnectionError, which the loop would take for an outage.
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def drive(store: QuotaStore, policy: ResolvedPolicy, traffic: Traffic) -> None:
    """Admit and settle in a loop, as a busy sidecar does, through any outage."""
    while not traffic.stop.is_set():
        try:
            request_id, decision = await admit_once(
                store, policy, cost_nanos=COST_NANOS, lease_ms=1000
            )
        except StoreError as error:
            traffic.errors.append(error)
            await asyncio.sleep(0.02)
            continue
        assert isinstance(decision, Admitted), decision.message
        try:
            settled = await store.settle(request_id, COST_NANOS, TOKENS)
        except StoreError as error:
            # Redis may have run the script before the connection dropped.
            traffic.errors.append(error)
            traffic.in_doubt += 1
            continue
        assert settled in (1, 2)
        traffic.acknowledged += 1


async def test_a_client_from_before_the_crash_recovers_and_loses_no_acknowledged_spend(
    crashable_redis: CrashableRedis, crash_store: QuotaStore, policy: ResolvedPolicy
) -> None:
    await crash_store.redis.config_set("appendfsync", "always")
    await crash_store.put_policy(policy)
    traffic = Traffic()
    loop = asyncio.create_task(drive(crash_store, policy, traffic))
    try:
        await wait_until(lambda: _true(traffic.acknowledged >= 20), timeout_s=10)
        await asyncio.to_thread(crashable_redis.kill)
        await wait_until(lambda: _true(bool(traffic.errors)), timeout_s=10)
        before_restart = traffic.acknowledged
        await asyncio.to_thread(crashable_redis.restart)
        await wait_until(lambda: _true(traffic.acknowledged >= before_restart + 20), timeout_s=15)
    finally:
        traffic.stop.set()
        await loop

    assert all(isinstance(error, StoreUnavailable) for error in traffic.errors), {
        type(error).__name__ for error in traffic.errors
    }

    # Re-read after every lease of the cancelled loop has run out.
    async def leases_gone() -> bool:
        await crash_store.sweep()
        return all(resv == 0 for _, resv in await spent_and_reserved(crash_store, policy))

    await wait_until(leases_gone, timeout_s=5)
    for spend, _ in await spent_and_reserved(crash_store, policy):
        assert traffic.acknowledged * COST_NANOS <= spend
        assert spend <= (traffic.acknowledged + traffic.in_doubt) * COST_NANOS


async def _true(value: bool) -> bool:
    return value
