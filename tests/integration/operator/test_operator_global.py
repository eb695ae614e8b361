"""--global-budget: every key counts against it; a missing one keeps keys from working."""

from __future__ import annotations

import base64

import pytest
import redis
from tests.integration.operator.operator_helpers import Cluster, spend, wait_for

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

GLOBAL_BUDGET = "global"


def global_max(db: redis.Redis, key_hash: str) -> int | None:
    raw = db.get(keyspace.policy_key(key_hash))
    if raw is None:
        return None
    policy = ResolvedPolicy.model_validate_json(raw)
    scope = next((s for s in policy.scopes if s.kind == "global"), None)
    return None if scope is None or scope.budget is None else scope.budget.max_nanos


def test_keys_wait_for_the_global_budget_and_follow_it(cluster: Cluster, db: redis.Redis) -> None:
    cluster.apply({"kind": "ApiKey", "metadata": {"name": "k"}, "spec": {}})
    missing = wait_for(
        lambda: (c := cluster.condition("apikey", "k", "Ready")) and c["status"] == "False" and c,
        what="Ready=False",
    )
    assert missing["reason"] == "GlobalBudgetNotFound"
    secret = wait_for(lambda: cluster.get("secret", "k"), what="Secret")
    key_hash = hash_key(base64.b64decode(secret["data"]["key"]).decode())
    assert global_max(db, key_hash) is None
    cluster.apply(
        {"kind": "Budget", "metadata": {"name": GLOBAL_BUDGET}, "spec": {"maxBudget": 100}}
    )
    wait_for(lambda: global_max(db, key_hash) == nanos(100), what="global scope in the policy")
    cluster.apply(
        {"kind": "Budget", "metadata": {"name": GLOBAL_BUDGET}, "spec": {"maxBudget": 50}}
    )
    wait_for(lambda: global_max(db, key_hash) == nanos(50), what="lowered global budget")
    wait_for(
        lambda: (c := cluster.condition("apikey", "k", "Ready")) and c["status"] == "True",
        what="Ready=True",
    )


def test_a_key_refused_by_the_global_budget_says_so(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    cluster.apply(
        {"kind": "Budget", "metadata": {"name": GLOBAL_BUDGET}, "spec": {"maxBudget": 50}},
        {"kind": "ApiKey", "metadata": {"name": "spender"}, "spec": {"budget": {"maxBudget": 100}}},
    )
    secret = wait_for(lambda: cluster.get("secret", "spender"), what="Secret")
    key_hash = hash_key(base64.b64decode(secret["data"]["key"]).decode())
    wait_for(lambda: global_max(db, key_hash) == nanos(50), what="global scope in the policy")
    raw = db.get(keyspace.policy_key(key_hash))
    assert raw is not None
    spend(redis_server.url, ResolvedPolicy.model_validate_json(raw), 50)
    exceeded = wait_for(
        lambda: (
            (c := cluster.condition("apikey", "spender", "BudgetExceeded"))
            and c["status"] == "True"
            and c
        ),
        what="the key's BudgetExceeded=True",
    )
    assert exceeded["reason"] == "GlobalBudgetExhausted"
    assert "the global budget" in exceeded["message"]
