"""`--redis-wait-replicas`: a settle is acknowledged once the replica holds it, so the
replica a failover promotes has every settled cent; with the replica stopped, the settle
still stands on the primary after the timeout, and says so. The latency it costs is
printed (`pytest -s`)."""

from __future__ import annotations

import logging
import os
import signal
import statistics
import time

import pytest
from tests.integration.store.scenario import CENT, api_key, attempt, policy_for
from tests.support.redis_server import SentinelGroup

from llmquota.policy import keyspace
from llmquota.store import QuotaStore, ReplicaWait

pytestmark = pytest.mark.integration

WAIT = ReplicaWait(replicas=1, timeout_ms=200)
# Long enough that a busy machine's replication never runs past it: the replica then
# holds every settle acknowledged while it runs.
DURABLE_WAIT = ReplicaWait(replicas=1, timeout_ms=2000)
SETTLES = 300


def replica_spend(group: SentinelGroup, store_key: str) -> int:
    client = group.replica.client()
    try:
        return int(client.hget(store_key, "spend") or 0)
    finally:
        client.close()


async def test_a_settle_waits_until_the_replica_holds_it(
    sentinel_group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    store = QuotaStore.from_url(sentinel_group.url, replica_wait=DURABLE_WAIT)
    try:
        policy = policy_for(api_key("durable", budget={"maxBudget": 10}))
        await store.put_policy(policy)
        scope = policy.scopes[0]
        budget_key = keyspace.budget_key(scope.tag, scope.id)

        admitted = await attempt(store, policy, cost_nanos=CENT)
        assert await store.settle(admitted.request_id, CENT, 10) == 1
        assert replica_spend(sentinel_group, budget_key) == CENT  # at once, no waiting

        replica = sentinel_group.replica.process
        assert replica is not None
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            admitted = await attempt(store, policy, cost_nanos=CENT)
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, "llmquota.store.replication"):
                assert await store.settle(admitted.request_id, CENT, 10) == 1
            assert time.monotonic() - started >= DURABLE_WAIT.timeout_ms / 1000
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        assert "reached 0 of 1 replicas within 2000 ms" in caplog.text
        [counter] = await store.read_budgets([(scope.tag, scope.id)])
        assert counter.spend_nanos == 2 * CENT  # the primary kept it
    finally:
        await store.close()


async def settle_latencies(store: QuotaStore, count: int) -> list[float]:
    policy = policy_for(api_key(f"latency-{count}", budget={"maxBudget": 1000}))
    await store.put_policy(policy)
    latencies = []
    for _ in range(count):
        admitted = await attempt(store, policy, cost_nanos=CENT)
        started = time.perf_counter()
        assert await store.settle(admitted.request_id, CENT, 10) == 1
        latencies.append(time.perf_counter() - started)
    return latencies


@pytest.mark.slow
async def test_what_waiting_for_the_replica_costs_a_settle(sentinel_group: SentinelGroup) -> None:
    figures = {}
    for name, wait in (("no wait", None), ("WAIT 1 200", WAIT)):
        store = QuotaStore.from_url(sentinel_group.url, replica_wait=wait)
        try:
            latencies = sorted(await settle_latencies(store, SETTLES))
        finally:
            await store.close()
        figures[name] = (statistics.median(latencies), latencies[int(len(latencies) * 0.99)])
    print(
        "\nsettle latency over loopback, p50 / p99: "
        + "; ".join(
            f"{name} {p50 * 1e3:.2f} / {p99 * 1e3:.2f} ms" for name, (p50, p99) in figures.items()
        )
    )
    assert figures["WAIT 1 200"][0] < WAIT.timeout_ms / 1000
