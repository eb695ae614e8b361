"""Leases, the sweep and policy changes on a real three-primary Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from tests.integration.store.conftest import CLOCK_START
from tests.integration.store.scenario import (
    CENT,
    ManualClock,
    api_key,
    attempt,
    budget,
    policy_for,
    team,
)
from tests.support.redis_server import ClusterGroup

from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

LEASE_MS = 1000


@pytest.fixture
async def clocked_cluster_store(
    shared_cluster: ClusterGroup,
) -> AsyncIterator[tuple[QuotaStore, ManualClock]]:
    shared_cluster.flush()
    clock = ManualClock(CLOCK_START)
    quota_store = QuotaStore.from_url(shared_cluster.url, clock_ms=clock)
    yield quota_store, clock
    await quota_store.close()


async def test_the_sweep_frees_a_dead_requests_leases_in_every_slot(
    clocked_cluster_store: tuple[QuotaStore, ManualClock],
) -> None:
    store, clock = clocked_cluster_store
    policy = policy_for(
        api_key("dead", team="gone"),
        team("gone", budget={"maxBudget": 1}),
        global_budget=budget("everyone", maxBudget=1),
    )
    held = await attempt(store, policy, lease_ms=LEASE_MS)
    assert held.admitted
    scopes = [(scope.tag, scope.id) for scope in policy.scopes[:2]]
    assert [c.reserved_nanos for c in await store.read_budgets(scopes)] == [CENT, CENT]
    clock.advance(LEASE_MS // 2)
    assert await store.renew([held.request_id], LEASE_MS) == 2  # one lease per slot

    clock.advance(LEASE_MS + 1)
    assert await store.sweep() == 2
    assert [c.reserved_nanos for c in await store.read_budgets(scopes)] == [0, 0]
    # A settle after the sweep still charges the real cost, in both slots.
    assert await store.settle(held.request_id, CENT, 10) == 2
    assert [c.spend_nanos for c in await store.read_budgets(scopes)] == [CENT, CENT]


async def test_policy_changes_reach_a_subscriber_on_another_node(
    cluster_store: QuotaStore, shared_cluster: ClusterGroup
) -> None:
    """PUBLISH on a Cluster reaches every node, so one subscription hears every change."""
    policies = [policy_for(api_key(f"key-{index}")) for index in range(6)]
    listener = QuotaStore.from_url(shared_cluster.url)
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def listen() -> None:
        async for key_hash in listener.policy_changes():
            await heard.put(key_hash)

    task = asyncio.create_task(listen())
    try:
        assert await asyncio.wait_for(heard.get(), 10) == "*"
        for policy in policies:  # their policy keys lie on all three nodes
            assert await cluster_store.put_policy(policy)
        got = [await asyncio.wait_for(heard.get(), 10) for _ in policies]
        assert got == [policy.key_hash for policy in policies]
        await cluster_store.delete_policy(policies[0].key_hash)
        assert await asyncio.wait_for(heard.get(), 10) == policies[0].key_hash
        assert await cluster_store.get_policy(policies[0].key_hash) is None
        assert await cluster_store.policy_hashes() == {p.key_hash for p in policies[1:]}
        owners = await cluster_store.policy_owners([p.key_hash for p in policies])
        assert set(owners) == {p.key_hash for p in policies[1:]}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.close()
