"""The Redis primary SIGKILLed under load from a real sidecar (the official client, four
at a time): the Sentinels promote the replica, the same sidecar process serves again by
itself, and the spend it served is counted on the new primary but for the requests whose
settle met the switch. The measured figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
import pytest
from tests.e2e.sidecar.processes import Process, start_sidecar
from tests.reliability.harness import policies_from_yaml, wait_until
from tests.reliability.sentinel.failover_load import Failover, Load
from tests.support.redis_server import SentinelGroup

from llmquota.policy import keyspace
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

pytestmark = pytest.mark.e2e

KEY = "sk-reliability-failover-0001"
WORKERS = 4
WARM_UP_REQUESTS = 40
PROMOTION_TIMEOUT_S = 30.0
SERVING_AGAIN_TIMEOUT_S = 30.0
AFTER_SERVING_REQUESTS = 40
WAIT_FLAGS = ("--redis-wait-replicas", "1", "--redis-wait-timeout", "0.2")
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {{name: failover}}
spec: {{budget: {{maxBudget: 1000, budgetDuration: 30d}}}}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: failover-bot}}
spec: {{team: failover}}
---
apiVersion: v1
kind: Secret
metadata: {{name: failover-bot}}
stringData: {{key: {KEY}}}
"""


async def key_spend(store: QuotaStore, policy: ResolvedPolicy) -> int:
    scope = next(scope for scope in policy.scopes if scope.kind == "key")
    (counter,) = await store.read_budgets([(scope.tag, scope.id)])
    return counter.spend_nanos


async def failover_under_load(
    group: SentinelGroup, sidecar: Process, store: QuotaStore, policy: ResolvedPolicy
) -> tuple[Load, float, float]:
    """Load, the primary killed, load until served again; the load, kill time, promotion s."""
    clients = [
        openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=KEY, max_retries=0, timeout=30)
        for _ in range(WORKERS)
    ]
    load = Load(clients)

    async def warm() -> bool:
        return len(load.served()) >= WARM_UP_REQUESTS

    try:
        load.start()
        await wait_until(warm, timeout_s=30)
        killed = time.monotonic()
        group.primary.stop(kill=True)
        promoted_after_s = await group.wait_for_promotion(PROMOTION_TIMEOUT_S)

        async def serving_again() -> bool:
            served_after = [o for o in load.served() if o.started >= killed]
            return len(served_after) >= AFTER_SERVING_REQUESTS

        await wait_until(serving_again, timeout_s=SERVING_AGAIN_TIMEOUT_S)
    finally:
        await asyncio.to_thread(load.stop)
        for client in clients:
            client.close()
    return load, killed, promoted_after_s


@pytest.mark.parametrize(
    "flags",
    [pytest.param((), id="async-replication"), pytest.param(WAIT_FLAGS, id="wait-replicas")],
)
async def test_a_sidecar_follows_a_sentinel_failover_under_load(
    sentinel_group: SentinelGroup, upstream: Process, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "failover.yaml").write_text(MANIFESTS)
    policy = policies_from_yaml(MANIFESTS)["failover-bot"]
    (tmp_path / "sidecar").mkdir()
    # A drain shorter than Process.stop's patience (15 s, then SIGKILL). Under heavy load a
    # shutdown after the failover was seen to stall past it (exit -9, printed), cause open.
    sidecar = start_sidecar(
        tmp_path / "sidecar", manifests, sentinel_group.url, upstream,
        "--shutdown-timeout", "5", *flags,
    )  # fmt: skip
    store = QuotaStore.from_url(sentinel_group.url, socket_timeout=1, socket_connect_timeout=1)
    try:

        async def stored() -> bool:
            return bool(await store.redis.exists(keyspace.policy_key(policy.key_hash)))

        await wait_until(stored, timeout_s=15)
        try:
            load, killed, promoted_after_s = await failover_under_load(
                sentinel_group, sidecar, store, policy
            )
        finally:
            sidecar.stop()  # lets every settle still running land first
        failover = Failover.measure(load, killed, promoted_after_s, await key_spend(store, policy))
    finally:
        await store.close()
    settle_errors = sidecar.log_text().count("could not settle")
    print(
        f"\nsentinel failover {' '.join(flags) or '(no wait)'}: {failover}; "
        f"{settle_errors} settles failed during the switch; sidecar exit {sidecar.popen.returncode}"
    )

    assert failover.serving_after_s < promoted_after_s + 5
    assert set(failover.refused_statuses) <= {503}
    # Served but not counted: the settles that met the dead primary (the sidecar logs
    # each), and at most one admission per worker that never reached the replica. Without
    # WAIT, settles the old primary acknowledged but had not yet sent to its replica are
    # lost too (asynchronous replication, docs/architecture.md): one CI run lost 25 that
    # way, so only the WAIT mode is held to the bound; both never count more than served.
    one_request = max(outcome.cost_nanos for outcome in load.served())
    assert failover.lost_nanos >= 0
    if flags == WAIT_FLAGS:
        assert failover.lost_nanos <= (settle_errors + WORKERS) * one_request
