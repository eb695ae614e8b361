"""BudgetOverride on the real API server: applied to the target's policy within a second,
marked Active with an Event, listed on the target's status, and marked Expired (with an
Event, the target's list emptied) when it ends. Refusals of bad overrides by the CRD
itself are in tests/reliability/manifests."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from tests.integration.operator.operator_helpers import Cluster, wait_for

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import BudgetIncrease, ResolvedPolicy, nanos
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

APPLY_WITHIN_S = 1.0  # the contract: sidecars honour an override within a second


def key_increases(db: redis.Redis, key_hash: str, kind: str) -> list[BudgetIncrease] | None:
    raw = db.get(keyspace.policy_key(key_hash))
    if raw is None:
        return None
    policy = ResolvedPolicy.model_validate_json(raw)
    scope = next((s for s in policy.scopes if s.kind == kind), None)
    return None if scope is None or scope.budget is None else scope.budget.increases


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def override(name: str, kind: str, target: str, expires: datetime) -> dict[str, Any]:
    return {
        "kind": "BudgetOverride",
        "metadata": {"name": name},
        "spec": {
            "target": {"kind": kind, "name": target},
            "increase": 50,
            "expires": rfc3339(expires),
            "reason": "launch week",
        },
    }


def applied_key(cluster: Cluster, db: redis.Redis, name: str, **spec: Any) -> str:
    """Apply an ApiKey and wait for its policy; its key hash."""
    cluster.apply({"kind": "ApiKey", "metadata": {"name": name}, "spec": spec})
    secret = wait_for(lambda: cluster.get("secret", name), what=f"Secret of {name}")
    key_hash = hash_key(base64.b64decode(secret["data"]["key"]).decode())
    wait_for(lambda: db.get(keyspace.policy_key(key_hash)), what=f"policy of {name}")
    return key_hash


def test_an_override_raises_its_key_within_a_second_and_says_so(
    cluster: Cluster, redis_server: EmbeddedRedis
) -> None:
    db = redis.Redis.from_url(redis_server.url)
    key_hash = applied_key(cluster, db, "launch", budget={"maxBudget": 0.02})
    assert key_increases(db, key_hash, "key") == []

    expires = datetime.now(UTC) + timedelta(hours=1)
    cluster.apply(override("launch-week", "ApiKey", "launch", expires))
    applied = time.monotonic()
    increases = wait_for(
        lambda: key_increases(db, key_hash, "key"), timeout=10, what="the increase in the policy"
    )
    took = time.monotonic() - applied
    assert took < APPLY_WITHIN_S, f"the override reached the policy after {took:.2f}s"
    assert increases == [
        BudgetIncrease(
            name="launch-week", nanos=nanos(50), expires_ms=int(expires.timestamp() * 1000)
        )
    ]

    active = wait_for(
        lambda: (
            (c := cluster.condition("budgetoverride", "launch-week", "Active"))
            and c["status"] == "True"
            and c
        ),
        what="Active=True",
    )
    assert active["reason"] == "Applied"
    assert "ApiKey launch" in active["message"]
    assert (cluster.get("budgetoverride", "launch-week") or {})["status"]["active"] is True
    wait_for(lambda: cluster.events("Applied"), what="an Applied Event")
    listed = wait_for(
        lambda: ((cluster.get("apikey", "launch") or {}).get("status") or {}).get("overrides"),
        what="status.overrides of the key",
    )
    assert [(o["name"], o["increase"]) for o in listed] == [("launch-week", 50)]

    # Deleting the override withdraws the increase at once.
    cluster.kubectl("delete", "budgetoverride", "launch-week")
    wait_for(lambda: key_increases(db, key_hash, "key") == [], what="the increase withdrawn")


def test_an_override_ends_at_its_expiry_with_an_event(
    cluster: Cluster, redis_server: EmbeddedRedis
) -> None:
    db = redis.Redis.from_url(redis_server.url)
    cluster.apply(
        {"kind": "Team", "metadata": {"name": "squad"}, "spec": {"budget": {"maxBudget": 1}}}
    )
    key_hash = applied_key(cluster, db, "member", team="squad")
    expires = datetime.now(UTC) + timedelta(seconds=3)
    cluster.apply(override("short", "Team", "squad", expires))
    wait_for(lambda: key_increases(db, key_hash, "team"), what="the team's increase")
    wait_for(
        lambda: ((cluster.get("team", "squad") or {}).get("status") or {}).get("overrides"),
        what="status.overrides of the team",
    )

    expired = wait_for(
        lambda: (
            (c := cluster.condition("budgetoverride", "short", "Active"))
            and c["status"] == "False"
            and c
        ),
        timeout=15,
        what="Active=False at expiry",
    )
    assert datetime.now(UTC) >= expires
    assert expired["reason"] == "Expired"
    wait_for(lambda: cluster.events("Expired"), what="an Expired Event")
    wait_for(
        lambda: ((cluster.get("team", "squad") or {}).get("status") or {}).get("overrides") == [],
        what="the team's list emptied",
    )


def test_an_override_of_a_missing_target_says_so(cluster: Cluster) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    cluster.apply(override("nobody", "ApiKey", "no-such-key", future))
    refused = wait_for(
        lambda: (c := cluster.condition("budgetoverride", "nobody", "Active")) and c,
        what="Active condition",
    )
    assert (refused["status"], refused["reason"]) == ("False", "TargetNotFound")
