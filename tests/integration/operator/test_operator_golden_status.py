"""Statuses against golden files: manifests in, spend through admit.lua, statuses out.

Each folder of tests/data/operator (its README says the format) is one case: its
manifests are applied to the real API server, its requests admitted (and settled) in
the real Redis as a sidecar would, and every object named in its `output.yaml` must
reach exactly that status: the fields the handlers and the status sync write, and each
condition's type, status, reason and message.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from tests.integration.operator.operator_helpers import Cluster, admit, spend, wait_for
from tests.support.waiting import WaitTimeoutError

from llmquota.policy import keyspace
from llmquota.policy.decision import Admitted
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[2] / "data" / "operator"
CASES = sorted(folder.name for folder in DATA.iterdir() if folder.is_dir())
ANY_TIME = "<time>"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
STATUS_TIMEOUT_S = 20.0


def matches(expected: Any, actual: Any) -> bool:
    """`actual` equals `expected`, where `<time>` in `expected` is any RFC 3339 time."""
    if expected == ANY_TIME:
        return isinstance(actual, str) and RFC3339.match(actual) is not None
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(value, actual[name]) for name, value in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


def comparable(status: dict[str, Any]) -> dict[str, Any]:
    """A status with its conditions in type order: they form a map keyed on `type`."""
    conditions = sorted(status.get("conditions") or [], key=lambda c: c["type"])
    return {**status, "conditions": conditions} if "conditions" in status else status


def key_policy(cluster: Cluster, db: redis.Redis, apikey: str) -> ResolvedPolicy:
    """The policy written for a Ready ApiKey, found by the hash of its Secret's key."""

    def ready() -> bool:
        found = cluster.condition("apikey", apikey, "Ready")
        return found is not None and found["status"] == "True"

    wait_for(ready, what=f"ApiKey {apikey} Ready")
    secret = cluster.get("secret", apikey)
    assert secret is not None
    key_hash = hash_key(base64.b64decode(secret["data"]["key"]).decode())

    def written() -> ResolvedPolicy | None:
        raw = db.get(keyspace.policy_key(key_hash))
        return None if raw is None else ResolvedPolicy.model_validate_json(raw)

    return wait_for(written, what=f"policy of {apikey}")


def make_requests(cluster: Cluster, db: redis.Redis, redis_url: str, folder: Path) -> None:
    """The case's spend.yaml: each request admitted, and settled unless `settle: false`."""
    path = folder / "spend.yaml"
    if not path.exists():
        return
    for request in yaml.safe_load(path.read_text()):
        policy = key_policy(cluster, db, request["apikey"])
        if request.get("settle", True):
            spend(redis_url, policy, request["usd"])
        else:
            assert isinstance(admit(redis_url, policy, request["usd"]), Admitted)


def expected_statuses(folder: Path, namespace: str) -> list[dict[str, Any]]:
    text = (folder / "output.yaml").read_text().replace("{namespace}", namespace)
    return [obj for obj in yaml.safe_load_all(text) if obj]


def assert_status_reached(cluster: Cluster, case: str, obj: dict[str, Any]) -> None:
    """Wait for `obj`'s status to match its golden one; the difference when it does not."""
    wanted = comparable(obj["status"])
    seen: list[dict[str, Any]] = [{}]

    def reached() -> bool:
        found = cluster.get(obj["kind"], obj["name"]) or {}
        seen[0] = comparable(found.get("status") or {})
        return matches(wanted, seen[0])

    try:
        wait_for(reached, STATUS_TIMEOUT_S, what=f"{case}: {obj['kind']} {obj['name']}")
    except WaitTimeoutError:
        assert seen[0] == wanted  # pytest shows the difference
        raise


@pytest.mark.parametrize("case", CASES)
def test_statuses_reach_the_golden_output(
    case: str, cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    folder = DATA / case
    cluster.kubectl("apply", "-f", str(folder / "input.yaml"))
    make_requests(cluster, db, redis_server.url, folder)
    expected = expected_statuses(folder, cluster.namespace)
    assert expected, f"{case}/output.yaml names no object"
    for obj in expected:
        assert_status_reached(cluster, case, obj)
