"""The store through Redis Sentinel: a `redis+sentinel://` URL, the same exact counts as on
one server, and the primary found again after the Sentinels promote its replica."""

from __future__ import annotations

import hashlib

import pytest
from tests.integration.store.scenario import CENT, api_key, attempt, policy_for
from tests.integration.store.test_store_processes import race
from tests.integration.store.test_store_reference_model import policies_of, run_against_reference
from tests.support.redis_server import SentinelGroup

from llmquota.policy.limits import nanos
from llmquota.store import QuotaStore
from llmquota.store.scripts import script_source

pytestmark = pytest.mark.integration

PROMOTION_TIMEOUT_S = 30.0


@pytest.mark.slow
async def test_500_requests_from_8_processes_through_sentinel_admit_exactly_the_budget(
    sentinel_group: SentinelGroup,
) -> None:
    store = QuotaStore.from_url(sentinel_group.url)
    try:
        policy = policy_for(api_key("racer", budget={"maxBudget": 1}))
        await store.put_policy(policy)

        outcomes = await race(sentinel_group.url, policy, "--estimate-nanos", str(CENT))

        admitted = [outcome for outcome in outcomes if outcome["admitted"]]
        assert len(admitted) == 100
        assert {outcome["settled"] for outcome in admitted} == {1}
        [counter] = await store.read_budgets([(policy.scopes[0].tag, policy.scopes[0].id)])
        assert (counter.spend_nanos, counter.reserved_nanos) == (nanos(1), 0)
        assert not (await attempt(store, policy, cost_nanos=1)).admitted
    finally:
        await store.close()


async def test_the_store_follows_a_failover_and_reloads_its_scripts(
    sentinel_group: SentinelGroup,
) -> None:
    """The promoted replica has no script cache: EVALSHA answers NOSCRIPT there once."""
    store = QuotaStore.from_url(sentinel_group.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        policy = policy_for(api_key("survivor", budget={"maxBudget": 1}))
        await store.put_policy(policy)
        before = await attempt(store, policy, cost_nanos=CENT)
        assert await store.settle(before.request_id, CENT, 10) == 1
        await sentinel_group.wait_replicated(PROMOTION_TIMEOUT_S)

        sentinel_group.primary.stop(kill=True)
        await sentinel_group.wait_for_promotion(PROMOTION_TIMEOUT_S)

        admit_sha = hashlib.sha1(script_source("admit").encode()).hexdigest()
        assert sentinel_group.replica.script_exists(admit_sha) is False
        after = await attempt(store, policy, cost_nanos=CENT)
        assert after.admitted
        assert await store.settle(after.request_id, CENT, 10) == 1
        [counter] = await store.read_budgets([(policy.scopes[0].tag, policy.scopes[0].id)])
        assert counter.spend_nanos == 2 * CENT
    finally:
        await store.close()


ACROSS_A_FAILOVER = [
    ("admit", 1, 20, 0),
    ("admit", 2, 30, 1),
    ("settle", 0, 1, 25),
    ("admit", 3, 10, 0),  # in flight across the failover
    ("admit", 1, 10, 1),
    ("failover",),
    ("settle", 2, 2, 15),  # its lease and reservation made on the old primary
    ("admit", 2, 40, 1),
    ("abort", 3, 0, 0),
    ("admit", 1, 5, 0),
    ("advance", 60_000),
    ("admit", 3, 60, 1),
    ("settle", 1, 3, 40),
    ("admit", 2, 10, 0),
    ("settle", 5, 1, 10),
    ("advance", 3_600_000),
    ("admit", 3, 30, 0),
]


async def test_the_scripts_match_the_reference_model_across_a_failover(
    sentinel_group: SentinelGroup,
) -> None:
    """Budgets, shares, per-minute counts and leases made on the old primary carry on on
    the promoted replica exactly as on one server (the failover waits until the replica
    holds every write: what async replication can lose is tested on its own)."""

    async def failover() -> None:
        await sentinel_group.wait_replicated(PROMOTION_TIMEOUT_S)
        sentinel_group.primary.stop(kill=True)
        await sentinel_group.wait_for_promotion(PROMOTION_TIMEOUT_S)

    policies = policies_of(
        {"maxBudget": 0.05, "budgetDuration": "1h"},
        {"rpm": 4, "tpm": 150},
        {"maxBudget": 0.03, "budgetDuration": "90s"},
        {"maxParallelRequests": 2},
    )
    await run_against_reference(
        sentinel_group.url,
        policies,
        ACROSS_A_FAILOVER,
        failover=failover,
        socket_timeout=1,
        socket_connect_timeout=1,
    )
