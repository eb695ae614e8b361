"""The operator on a `redis+sentinel://` URL, its primary SIGKILLed: without a restart it
keeps syncing spend into statuses and writing policies, now on the promoted replica."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator

import pytest
from kopf.testing import KopfRunner
from tests.integration.operator.operator_helpers import (
    Cluster,
    collect_operator_leftovers,
    operator_config,
)
from tests.reliability.harness import admit_once
from tests.support.kube_apiserver import KubeAPIServer
from tests.support.redis_server import SentinelGroup
from tests.support.waiting import wait_until

from llmquota.operator.handlers import build_registry
from llmquota.policy.decision import Admitted
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

PROMOTION_TIMEOUT_S = 30.0
FOLLOW_TIMEOUT_S = 30.0
CHARGE_NANOS = 250_000_000  # 0.25 USD


@pytest.fixture
def sentinel_operator(
    kube_apiserver: KubeAPIServer, namespace: str, sentinel_group: SentinelGroup
) -> Iterator[KopfRunner]:
    """The operator's registry under kopf's runner, on the Sentinel URL."""
    os.environ["KUBECONFIG"] = str(kube_apiserver.kubeconfig)
    registry = build_registry(operator_config(sentinel_group.url, namespace))
    with KopfRunner(
        ["run", "--standalone", "--namespace", namespace], registry=registry, timeout=60
    ) as runner:
        yield runner
    collect_operator_leftovers()
    assert runner.exception is None or isinstance(runner.exception, SystemExit), runner.output


async def key_policy(cluster: Cluster, store: QuotaStore, name: str) -> ResolvedPolicy | None:
    secret = await asyncio.to_thread(cluster.get, "secret", name)
    if secret is None or "key" not in (secret.get("data") or {}):
        return None
    return await store.get_policy(hash_key(base64.b64decode(secret["data"]["key"]).decode()))


async def charge(store: QuotaStore, policy: ResolvedPolicy) -> None:
    """One request admitted and settled at CHARGE_NANOS, as a sidecar would."""
    request_id, decision = await admit_once(store, policy, cost_nanos=CHARGE_NANOS)
    assert isinstance(decision, Admitted)
    assert await store.settle(request_id, CHARGE_NANOS, 100) == 1


async def status_spend(cluster: Cluster, name: str) -> float | None:
    found = await asyncio.to_thread(cluster.get, "apikey", name)
    return ((found or {}).get("status") or {}).get("spend")


async def test_the_operator_follows_a_sentinel_failover(
    kube_apiserver: KubeAPIServer,
    namespace: str,
    sentinel_group: SentinelGroup,
    sentinel_operator: KopfRunner,
) -> None:
    cluster = Cluster(kube_apiserver, namespace)
    store = QuotaStore.from_url(sentinel_group.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        await asyncio.to_thread(
            cluster.apply,
            {"kind": "Team", "metadata": {"name": "ha"}, "spec": {"budget": {"maxBudget": 10}}},
            {"kind": "ApiKey", "metadata": {"name": "before"}, "spec": {"team": "ha"}},
        )
        policy: ResolvedPolicy | None = None

        async def policy_written() -> bool:
            nonlocal policy
            policy = await key_policy(cluster, store, "before")
            return policy is not None

        await wait_until(policy_written, FOLLOW_TIMEOUT_S)
        assert policy is not None
        await charge(store, policy)

        async def spend_is(expected: float) -> bool:
            return await status_spend(cluster, "before") == expected

        await wait_until(lambda: spend_is(0.25), FOLLOW_TIMEOUT_S)
        await sentinel_group.wait_replicated(FOLLOW_TIMEOUT_S)

        sentinel_group.primary.stop(kill=True)
        await sentinel_group.wait_for_promotion(PROMOTION_TIMEOUT_S)

        await charge(store, policy)  # on the new primary
        await wait_until(lambda: spend_is(0.5), FOLLOW_TIMEOUT_S)
        await asyncio.to_thread(
            cluster.apply,
            {"kind": "ApiKey", "metadata": {"name": "after"}, "spec": {"team": "ha"}},
        )

        async def new_policy_written() -> bool:
            return await key_policy(cluster, store, "after") is not None

        await wait_until(new_policy_written, FOLLOW_TIMEOUT_S)
    finally:
        await store.close()
