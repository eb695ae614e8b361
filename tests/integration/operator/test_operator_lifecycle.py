"""The operator's life around what it was not there to see: deletions while it was down,
finalizers stripped by hand, policies left behind in Redis.

Each test starts (and stops) its own operator, so it can delete things in between.
"""

from __future__ import annotations

import base64
import functools
from typing import TYPE_CHECKING

import pytest
import redis
from tests.integration.operator.operator_helpers import Cluster, operator_running, wait_for

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

RETURN_DEADLINE_S = 30.0
"""How soon after the operator's return a deletion it missed must be applied."""


def has_policy(db: redis.Redis, key_hash: str) -> bool:
    return bool(db.exists(keyspace.policy_key(key_hash)))


def ready_key_hash(cluster: Cluster, name: str) -> str:
    """Wait for the ApiKey to be Ready; the hash its policy is written under."""
    wait_for(
        lambda: (c := cluster.condition("apikey", name, "Ready")) and c["status"] == "True",
        what=f"ApiKey {name} Ready",
    )
    secret = cluster.get("secret", name)
    assert secret is not None
    return hash_key(base64.b64decode(secret["data"]["key"]).decode())


def test_a_key_deleted_while_the_operator_was_down_is_refused_on_its_return(
    kube_apiserver: KubeAPIServer,
    namespace: str,
    redis_server: EmbeddedRedis,
    db: redis.Redis,
) -> None:
    cluster = Cluster(kube_apiserver, namespace)
    with operator_running(kube_apiserver, namespace, redis_server.url):
        cluster.apply({"kind": "ApiKey", "metadata": {"name": "left-behind"}, "spec": {}})
        key_hash = ready_key_hash(cluster, "left-behind")
        wait_for(lambda: has_policy(db, key_hash), what="policy written")
    # The operator is down: someone strips whatever finalizer there is and deletes.
    cluster.kubectl(
        "patch", "apikey", "left-behind", "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    cluster.kubectl("delete", "apikey", "left-behind", "--wait=true", "--timeout=30s")
    assert has_policy(db, key_hash), "nobody was there to withdraw it"
    with operator_running(kube_apiserver, namespace, redis_server.url):
        wait_for(
            lambda: not has_policy(db, key_hash),
            timeout=RETURN_DEADLINE_S,
            what="the orphaned policy withdrawn",
        )
    assert key_hash.encode() not in db.smembers(keyspace.POLICY_INDEX)


def test_policies_no_apikey_owns_are_swept_while_running(
    kube_apiserver: KubeAPIServer,
    namespace: str,
    redis_server: EmbeddedRedis,
    db: redis.Redis,
) -> None:
    def plant(owner_namespace: str, name: str) -> str:
        key_hash = hash_key(f"sk-planted-{owner_namespace}-{name}")
        planted = ResolvedPolicy(key_hash=key_hash, namespace=owner_namespace, key_name=name)
        db.set(keyspace.policy_key(key_hash), planted.model_dump_json())
        db.sadd(keyspace.POLICY_INDEX, key_hash)
        return key_hash

    cluster = Cluster(kube_apiserver, namespace)
    with operator_running(kube_apiserver, namespace, redis_server.url, orphan_interval=1.0):
        cluster.apply({"kind": "ApiKey", "metadata": {"name": "owner"}, "spec": {}})
        owned = ready_key_hash(cluster, "owner")
        orphan = plant(namespace, "nobody")
        elsewhere = plant("a-namespace-not-watched", "nobody")
        wait_for(lambda: not has_policy(db, orphan), timeout=20, what="planted orphan swept")
        assert has_policy(db, owned)
        assert has_policy(db, elsewhere), "another namespace's policies are not ours"


def test_the_finalizer_older_versions_added_is_removed(
    kube_apiserver: KubeAPIServer, namespace: str, redis_server: EmbeddedRedis
) -> None:
    cluster = Cluster(kube_apiserver, namespace)
    legacy = {"finalizers": ["llmquota.dev/finalizer"]}
    cluster.apply(
        {"kind": "Budget", "metadata": {"name": "old-tier", **legacy}, "spec": {"maxBudget": 1}},
        {"kind": "ApiKey", "metadata": {"name": "old-key", **legacy}, "spec": {}},
    )
    with operator_running(kube_apiserver, namespace, redis_server.url):
        for kind, name in (("budget", "old-tier"), ("apikey", "old-key")):
            wait_for(
                functools.partial(has_no_finalizer, cluster, kind, name),
                what=f"{kind} {name} without a finalizer",
            )


def has_no_finalizer(cluster: Cluster, kind: str, name: str) -> bool:
    found = cluster.get(kind, name)
    return found is not None and not found["metadata"].get("finalizers")
