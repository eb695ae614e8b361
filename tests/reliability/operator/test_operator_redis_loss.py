"""The operator against a Redis that is SIGKILLed and comes back EMPTY (a new pod
without its volume): it re-seeds policies and spend by itself, without a crash, from the
resources and their statuses. Along the way: statuses carry a key's hint, never the key,
and an ApiKey cannot join a Team of another namespace."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from kopf.testing import KopfRunner
from tests.integration.operator.operator_helpers import collect_operator_leftovers
from tests.reliability.harness import admit_once, wait_until
from tests.reliability.rig import CrashableRedis

from llmquota.operator.config import HostPort, OperatorConfig, SidecarConfig
from llmquota.operator.handlers import build_registry
from llmquota.policy import keyspace
from llmquota.policy.decision import Admitted
from llmquota.policy.key_hash import hash_key, key_hint
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

SPEND_NANOS = 2_000_000_000


@pytest.fixture
def other_namespace(kube_apiserver: KubeAPIServer, kube_namespace: str) -> Iterator[str]:
    name = f"{kube_namespace[:55]}-x"
    kube_apiserver.kubectl("create", "namespace", name, check=True)
    yield name
    kube_apiserver.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
async def store(crashable_redis: CrashableRedis) -> AsyncIterator[QuotaStore]:
    quota_store = QuotaStore.from_url(crashable_redis.url, socket_connect_timeout=0.5)
    yield quota_store
    await quota_store.close()


@pytest.fixture
def running_operator(
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
    other_namespace: str,
    crashable_redis: CrashableRedis,
) -> Iterator[KopfRunner]:
    os.environ["KUBECONFIG"] = str(kube_apiserver.kubeconfig)
    config = OperatorConfig(
        redis_url=crashable_redis.url,
        namespaces=(kube_namespace, other_namespace),
        health_listen=HostPort("127.0.0.1", 0),
        # Production's order (recovery every 1 s, status every 5 s) scaled down, but with
        # a status sync sure to run between a Redis loss and the recovery check.
        status_interval=0.5,
        recovery_interval=2.0,
        sidecar=SidecarConfig(image="llmquota:test", redis_url=crashable_redis.url),
    )
    arguments = ["run", "--standalone", "--namespace", kube_namespace, "--namespace",
                 other_namespace]  # fmt: skip
    with KopfRunner(arguments, registry=build_registry(config), timeout=60) as runner:
        yield runner
    collect_operator_leftovers()
    assert runner.exception is None or isinstance(runner.exception, SystemExit), runner.output


def get(kube: KubeAPIServer, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = kube.kubectl("-n", namespace, "get", kind, name, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def condition(resource: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = resource.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type_), {})


def apply(kube: KubeAPIServer, namespace: str, *objects: dict[str, Any]) -> None:
    items = [{"apiVersion": "llmquota.dev/v1alpha1", **item} for item in objects]
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=listing, check=True)


async def spend_two_dollars(
    kube: KubeAPIServer, namespace: str, store: QuotaStore
) -> tuple[str, ResolvedPolicy]:
    """A Team with a key, 2 USD settled on it and shown in both statuses: the key, policy."""
    apply(kube, namespace,
          {"kind": "Team", "metadata": {"name": "qa"},
           "spec": {"budget": {"maxBudget": 10, "budgetDuration": "30d"}}},
          {"kind": "ApiKey", "metadata": {"name": "bot"}, "spec": {"team": "qa"}})  # fmt: skip

    async def bot_ready() -> bool:
        return condition(get(kube, namespace, "apikey", "bot"), "Ready").get("status") == "True"

    await wait_until(bot_ready, timeout_s=30)
    key = base64.b64decode(get(kube, namespace, "secret", "bot")["data"]["key"]).decode()
    policy = await store.get_policy(hash_key(key))
    assert policy is not None
    assert [scope.kind for scope in policy.scopes] == ["team", "key"]
    request_id, decision = await admit_once(store, policy, cost_nanos=SPEND_NANOS)
    assert isinstance(decision, Admitted)
    assert await store.settle(request_id, SPEND_NANOS, 100) == 1

    async def spend_in_statuses() -> bool:
        return all(
            get(kube, namespace, kind, name).get("status", {}).get("spend") == 2
            for kind, name in (("apikey", "bot"), ("team", "qa"))
        )

    await wait_until(spend_in_statuses, timeout_s=15)
    return key, policy


async def test_keys_stay_hidden_and_in_their_namespace(
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
    other_namespace: str,
    store: QuotaStore,
    running_operator: KopfRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = kube_apiserver
    apply(kube, other_namespace,
          {"kind": "ApiKey", "metadata": {"name": "intruder"}, "spec": {"team": "qa"}})  # fmt: skip
    key, _ = await spend_two_dollars(kube, kube_namespace, store)

    # The intruder did not join the other namespace's team.
    intruder = get(kube, other_namespace, "apikey", "intruder")
    assert condition(intruder, "Ready").get("status") == "False", intruder.get("status")
    assert "qa" in condition(intruder, "Ready").get("message", "")
    intruder_secret = get(kube, other_namespace, "secret", "intruder")
    if intruder_secret:
        intruder_key = base64.b64decode(intruder_secret["data"]["key"]).decode()
        stored = await store.get_policy(hash_key(intruder_key))
        assert stored is None or stored.team is None

    # Statuses show a hint of the key, never the key; nor does the operator's log.
    assert get(kube, kube_namespace, "apikey", "bot")["status"]["keyHint"] == key_hint(key)
    everything = kube.kubectl(
        "get", "teams,apikeys,budgets,ratelimits", "-A", "-o", "json", check=True
    ).stdout
    assert key not in everything
    assert key not in caplog.text  # the operator runs in this process


async def test_redis_back_empty_is_reseeded(
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
    crashable_redis: CrashableRedis,
    store: QuotaStore,
    running_operator: KopfRunner,
) -> None:
    key, policy = await spend_two_dollars(kube_apiserver, kube_namespace, store)
    await asyncio.to_thread(crashable_redis.kill)
    await asyncio.to_thread(crashable_redis.restart, empty=True)
    counters = [keyspace.budget_key(scope.tag, scope.id) for scope in policy.scopes]

    async def policy_back() -> bool:
        return await store.get_policy(hash_key(key)) is not None

    await wait_until(policy_back, timeout_s=20)
    assert not running_operator.future.done()  # still running: no crash
    spends = [await store.redis.hget(counter, "spend") for counter in counters]
    assert spends == [str(SPEND_NANOS).encode()] * len(counters)
