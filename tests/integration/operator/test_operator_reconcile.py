"""The operator against a real kube-apiserver and a real redis-server.

Manifests are applied with kubectl; the tests then wait (with deadlines) for Redis and
the statuses to follow.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, cast

import pytest
import redis
from tests.integration.operator.operator_helpers import Cluster, spend, wait_for

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key, key_hint
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration


def policy(db: redis.Redis, key_hash: str) -> ResolvedPolicy | None:
    raw = db.get(keyspace.policy_key(key_hash))
    return None if raw is None else ResolvedPolicy.model_validate_json(raw)


def secret_key(cluster: Cluster, name: str) -> str | None:
    secret = cluster.get("secret", name)
    if secret is None or "key" not in (secret.get("data") or {}):
        return None
    return base64.b64decode(secret["data"]["key"]).decode()


def ready(cluster: Cluster, kind: str, name: str, status: str = "True") -> dict[str, Any] | None:
    condition = cluster.condition(kind, name, "Ready")
    return condition if condition and condition["status"] == status else None


def test_apply_team_budget_key_then_redis_and_status_follow(
    cluster: Cluster, db: redis.Redis
) -> None:
    cluster.apply(
        {
            "kind": "Budget",
            "metadata": {"name": "tier"},
            "spec": {"maxBudget": 10, "softBudget": 8},
        },
        {
            "kind": "Team",
            "metadata": {"name": "qa"},
            "spec": {"budgetRef": {"name": "tier"}, "models": ["gpt-4o-mini"]},
        },
        {"kind": "ApiKey", "metadata": {"name": "bot"}, "spec": {"team": "qa"}},
    )
    wait_for(lambda: ready(cluster, "apikey", "bot"), what="ApiKey bot Ready")
    key = secret_key(cluster, "bot")
    assert key is not None
    assert key.startswith("sk-")
    assert len(key) == 35
    secret = cluster.get("secret", "bot")
    assert secret is not None
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("ApiKey", "bot")
    # Redis holds the key's hash, never the key.
    written = wait_for(lambda: policy(db, hash_key(key)), what="policy in Redis")
    assert written.team == "qa"
    assert written.models == ["gpt-4o-mini"]
    team_scope = next(s for s in written.scopes if s.kind == "team")
    assert team_scope.budget is not None
    assert team_scope.budget.max_nanos == 10_000_000_000
    assert all(key not in str(value) for value in db.keys("*"))
    apikey = wait_for(
        lambda: (o := cluster.get("apikey", "bot")) and o["status"].get("keyHint") and o,
        what="keyHint",
    )
    assert apikey["status"]["keyHint"] == key_hint(key)
    assert apikey["status"]["observedGeneration"] == apikey["metadata"]["generation"]
    team = wait_for(
        lambda: (o := cluster.get("team", "qa")) and o["status"].get("keys") == 1 and o,
        what="team status keys=1",
    )
    assert team["status"]["maxBudget"] == 10
    assert team["status"]["spend"] == 0
    budget = wait_for(
        lambda: (o := cluster.get("budget", "tier")) and o["status"].get("subjects") == 1 and o,
        what="budget subjects=1",
    )
    assert budget["status"]["conditions"][0]["type"] == "Ready"
    # The operator never writes spec (blocked: false is the CRD's default).
    assert cluster.get("apikey", "bot")["spec"] == {"team": "qa", "blocked": False}  # type: ignore[index]


def test_dangling_budget_ref_is_a_condition_not_a_crash(cluster: Cluster, db: redis.Redis) -> None:
    cluster.apply(
        {
            "kind": "ApiKey",
            "metadata": {"name": "dangling"},
            "spec": {"budgetRef": {"name": "missing"}},
        }
    )
    condition = wait_for(lambda: ready(cluster, "apikey", "dangling", "False"), what="Ready=False")
    assert condition["reason"] == "BudgetNotFound"
    assert "missing" in condition["message"]
    wait_for(lambda: cluster.events("BudgetNotFound"), what="BudgetNotFound Event")
    key = secret_key(cluster, "dangling")
    assert key is not None
    # Refused until its limits resolve, by a policy that says why (not as an unknown key).
    refusing = wait_for(lambda: policy(db, hash_key(key)), what="incomplete policy")
    assert refusing.refusal is not None
    assert refusing.refusal.reason == "BudgetNotFound"
    # The Budget appearing fixes it, with no change to the key.
    cluster.apply({"kind": "Budget", "metadata": {"name": "missing"}, "spec": {"maxBudget": 1}})
    wait_for(lambda: ready(cluster, "apikey", "dangling"), what="Ready=True after Budget")
    wait_for(
        lambda: (p := policy(db, hash_key(key))) is not None and p.refusal is None,
        what="complete policy written",
    )


def test_missing_team_and_models_outside_team(cluster: Cluster) -> None:
    cluster.apply(
        {"kind": "Team", "metadata": {"name": "narrow"}, "spec": {"models": ["llama3"]}},
        {
            "kind": "ApiKey",
            "metadata": {"name": "wide"},
            "spec": {"team": "narrow", "models": ["gpt-4o"]},
        },
        {"kind": "ApiKey", "metadata": {"name": "orphan"}, "spec": {"team": "nobody"}},
    )
    outside = wait_for(lambda: ready(cluster, "apikey", "wide", "False"), what="wide not Ready")
    assert outside["reason"] == "ModelsOutsideTeam"
    orphan = wait_for(lambda: ready(cluster, "apikey", "orphan", "False"), what="orphan not Ready")
    assert orphan["reason"] == "TeamNotFound"


def test_delete_removes_the_policy(cluster: Cluster, db: redis.Redis) -> None:
    cluster.apply({"kind": "ApiKey", "metadata": {"name": "doomed"}, "spec": {}})
    wait_for(lambda: ready(cluster, "apikey", "doomed"), what="doomed Ready")
    key_hash = hash_key(secret_key(cluster, "doomed") or "")
    assert policy(db, key_hash) is not None
    cluster.kubectl("delete", "apikey", "doomed", "--wait=true", "--timeout=30s")
    wait_for(lambda: policy(db, key_hash) is None, what="policy deleted")
    assert key_hash.encode() not in db.smembers(keyspace.POLICY_INDEX)


def test_editing_the_secret_rotates_the_policy_within_a_second(
    cluster: Cluster, db: redis.Redis
) -> None:
    cluster.apply({"kind": "ApiKey", "metadata": {"name": "rotating"}, "spec": {}})
    wait_for(lambda: ready(cluster, "apikey", "rotating"), what="rotating Ready")
    old_hash = hash_key(secret_key(cluster, "rotating") or "")
    wait_for(lambda: policy(db, old_hash), what="old policy")
    new_key = "sk-rotated-by-hand-0123456789abcdef"
    patch = {"data": {"key": base64.b64encode(new_key.encode()).decode()}}
    started = time.monotonic()
    cluster.kubectl("patch", "secret", "rotating", "--type=merge", "-p", json.dumps(patch))
    wait_for(lambda: policy(db, hash_key(new_key)), timeout=5, what="new policy")
    took = time.monotonic() - started
    wait_for(lambda: policy(db, old_hash) is None, timeout=5, what="old policy gone")
    assert took < 1.0, f"rotation took {took:.2f}s"
    hint = wait_for(
        lambda: (
            (o := cluster.get("apikey", "rotating"))
            and o["status"].get("keyHint") == key_hint(new_key)
        ),
        what="new keyHint",
    )
    assert hint


def test_user_provided_secret_is_used_and_watched(cluster: Cluster, db: redis.Redis) -> None:
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "byo-key",
        "--from-literal=key=sk-brought-my-own-key-0000000000000",
    )
    cluster.apply(
        {"kind": "ApiKey", "metadata": {"name": "byo"}, "spec": {"secretName": "byo-key"}}
    )
    wait_for(lambda: policy(db, hash_key("sk-brought-my-own-key-0000000000000")), what="byo policy")
    replacement = "sk-brought-my-own-key-1111111111111"
    patch = {"data": {"key": base64.b64encode(replacement.encode()).decode()}}
    cluster.kubectl("patch", "secret", "byo-key", "--type=merge", "-p", json.dumps(patch))
    wait_for(lambda: policy(db, hash_key(replacement)), timeout=5, what="rotated byo policy")


def test_budget_window_resets_and_status_moves_on(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    cluster.apply(
        {
            "kind": "ApiKey",
            "metadata": {"name": "short"},
            "spec": {"budget": {"maxBudget": 1, "budgetDuration": "2s"}},
        }
    )

    def reset_at() -> str | None:
        shown = (cluster.get("apikey", "short") or {}).get("status", {}).get("budgetResetAt")
        return str(shown) if shown else None

    def moved() -> str | None:
        shown = reset_at()
        return shown if shown != first else None

    first = wait_for(reset_at, what="first budgetResetAt")
    second = wait_for(moved, timeout=10, what="budgetResetAt moved")
    assert second > first
    # A reset is told (an Event) when the window that ended had spend.
    written = wait_for(lambda: policy(db, hash_key(secret_key(cluster, "short") or "")))
    spend(redis_server.url, written, 0.1)
    wait_for(lambda: cluster.events("BudgetReset"), timeout=10, what="BudgetReset Event")


def test_spend_shows_in_status_and_exceeding_sets_conditions(
    cluster: Cluster, db: redis.Redis
) -> None:
    cluster.apply(
        {
            "kind": "ApiKey",
            "metadata": {"name": "spender"},
            "spec": {"budget": {"maxBudget": 1, "softBudget": 0.5}},
        }
    )
    wait_for(lambda: ready(cluster, "apikey", "spender"), what="spender Ready")
    written = wait_for(
        lambda: policy(db, hash_key(secret_key(cluster, "spender") or "")), what="policy"
    )
    scope = next(s for s in written.scopes if s.kind == "key")
    # Spend as the sidecar's settle would have counted it (never-resetting window starts at 0).
    db.hset(
        keyspace.budget_key(scope.tag, scope.id),
        mapping={"win": 0, "spend": 1_000_000_000, "resv": 0, "s:gpt-4o": 1_000_000_000},
    )
    exceeded = wait_for(
        lambda: (
            (c := cluster.condition("apikey", "spender", "BudgetExceeded"))
            and c["status"] == "True"
            and c
        ),
        what="BudgetExceeded=True",
    )
    assert exceeded["reason"] == "BudgetExhausted"
    status = cluster.get("apikey", "spender")["status"]  # type: ignore[index]
    assert status["spend"] == 1
    assert status["remaining"] == 0
    assert status["modelSpend"] == {"gpt-4o": 1}
    assert cluster.condition("apikey", "spender", "SoftBudgetExceeded")["status"] == "True"  # type: ignore[index]
    wait_for(lambda: cluster.events("BudgetExceeded"), what="BudgetExceeded Event")
    # No patch when nothing changed: the resourceVersion stays put across syncs.
    version = cluster.get("apikey", "spender")["metadata"]["resourceVersion"]  # type: ignore[index]
    time.sleep(1.5)  # three status intervals: proving an absence needs a wait
    assert cluster.get("apikey", "spender")["metadata"]["resourceVersion"] == version  # type: ignore[index]


def test_redis_loss_restores_policies_and_spend(cluster: Cluster, db: redis.Redis) -> None:
    cluster.apply(
        {"kind": "ApiKey", "metadata": {"name": "survivor"}, "spec": {"budget": {"maxBudget": 5}}}
    )
    wait_for(lambda: ready(cluster, "apikey", "survivor"), what="survivor Ready")
    key_hash = hash_key(secret_key(cluster, "survivor") or "")
    written = wait_for(lambda: policy(db, key_hash), what="policy")
    scope = next(s for s in written.scopes if s.kind == "key")
    counter = keyspace.budget_key(scope.tag, scope.id)
    db.hset(counter, mapping={"win": 0, "spend": 2_000_000_000, "resv": 0})
    wait_for(
        lambda: (cluster.get("apikey", "survivor") or {}).get("status", {}).get("spend") == 2,
        what="spend 2 in status",
    )
    db.flushall()
    started = time.monotonic()
    wait_for(lambda: policy(db, key_hash), timeout=5, what="policy restored")
    restored = wait_for(
        lambda: cast("bytes | None", db.hget(counter, "spend")), timeout=5, what="counter"
    )
    assert int(str(restored, "ascii")) == 2_000_000_000
    assert time.monotonic() - started < 3
