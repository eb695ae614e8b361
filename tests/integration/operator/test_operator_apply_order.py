"""Keys applied in one `kubectl apply` with the Team and RateLimit they name, in any order:
every key ends Ready with a complete policy. A key's handler that is still writing its
Secret when its Team arrives must not be skipped by the Team's re-resolution (it was:
such keys stayed incomplete, 503 policy_incomplete, until the operator restarted)."""

from __future__ import annotations

import base64
import functools

import pytest
import redis
from tests.integration.operator.operator_helpers import Cluster, wait_for

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy

pytestmark = pytest.mark.integration

PAIRS = 12


def complete(db: redis.Redis, cluster: Cluster, name: str) -> bool:
    secret = cluster.get("secret", name)
    if secret is None:
        return False
    raw = db.get(keyspace.policy_key(hash_key(base64.b64decode(secret["data"]["key"]).decode())))
    return raw is not None and ResolvedPolicy.model_validate_json(raw).refusal is None


def test_keys_applied_before_what_they_name_end_complete(cluster: Cluster, db: redis.Redis) -> None:
    # Keys first, then what they reference, in one apply: the operator sees the keys
    # before their Teams and RateLimits, and their Secrets are generated meanwhile.
    keys = [
        {
            "kind": "ApiKey",
            "metadata": {"name": f"early-{index}"},
            "spec": {"team": f"later-{index}", "rateLimitRef": {"name": f"limit-{index}"}},
        }
        for index in range(PAIRS)
    ]
    named = [
        obj
        for index in range(PAIRS)
        for obj in (
            {"kind": "Team", "metadata": {"name": f"later-{index}"}, "spec": {}},
            {"kind": "RateLimit", "metadata": {"name": f"limit-{index}"}, "spec": {"rpm": 5}},
        )
    ]
    cluster.apply(*keys, *named)
    for index in range(PAIRS):
        wait_for(
            functools.partial(complete, db, cluster, f"early-{index}"),
            timeout=30,
            what=f"a complete policy for early-{index}",
        )
        # The status is patched after the policy is written: it may come a moment later.
        wait_for(
            functools.partial(ready, cluster, f"early-{index}"),
            timeout=30,
            what=f"early-{index} Ready",
        )


def ready(cluster: Cluster, name: str) -> bool:
    condition = cluster.condition("apikey", name, "Ready")
    return condition is not None and condition["status"] == "True"
