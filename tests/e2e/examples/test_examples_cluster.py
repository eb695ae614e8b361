"""Every folder of examples/ on the test bed: `kubectl apply -n <ns> -f examples/<folder>/`
against the real API server, the operator reconciling it into a real Redis (as in
tests/integration/operator), a sidecar on that Redis in front of the fake upstream, the
README's requests through the official client, then what the README says `kubectl get`
shows."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from tests.e2e.examples.conftest import EXAMPLES_DIR, StartSidecar, clients_of, identity_flags
from tests.e2e.examples.promises import EXAMPLES, ON_A_CLUSTER
from tests.integration.operator.conftest import (
    llmquota_crds,
    namespace,
    redis_server,
    running_operator,
)
from tests.support.kube_apiserver import KubeAPIServer
from tests.support.waiting import wait_until

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.store import EmbeddedRedis

__all__ = ["llmquota_crds", "namespace", "redis_server", "running_operator"]  # fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("running_operator")]

APPLY_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 60.0  # status sync on a busy machine


def _complete(policy_json: bytes | str) -> bool:
    """A key's or a Team's workload policy that does not only refuse."""
    fields = json.loads(policy_json)
    return (fields.get("team_policy") or fields).get("refusal") is None


def test_every_example_folder_has_its_cluster_promises() -> None:
    assert set(ON_A_CLUSTER) == set(EXAMPLES)


@pytest.mark.parametrize("folder", sorted(EXAMPLES))
async def test_example_on_a_cluster(
    folder: str,
    kube_apiserver: KubeAPIServer,
    namespace: str,
    redis_server: EmbeddedRedis,
    start_sidecar: StartSidecar,
    opened_clients: list[openai.OpenAI],
    tmp_path: Path,
) -> None:
    applied = kube_apiserver.kubectl("apply", "-n", namespace, "-f", f"{EXAMPLES_DIR / folder}/")
    assert applied.returncode == 0, applied.stderr
    example = EXAMPLES[folder]
    store = redis.Redis.from_url(redis_server.url)
    try:

        async def policies_written() -> bool:
            """Every key's policy is in the store, and complete: a key reconciled before
            its Team or Budget was seen has a policy marked incomplete (503) until then."""
            raw = [store.get(keyspace.policy_key(hash_key(key))) for key in example.keys]
            if example.pod is not None:
                raw.append(store.hget(keyspace.workload_policies_key(namespace), example.pod.team))
            return all(found is not None and _complete(found) for found in raw)

        await wait_until(policies_written, APPLY_TIMEOUT_S)
    finally:
        store.close()

    async def overrides_active() -> bool:
        """A folder's BudgetOverrides apply once the operator marked them (a user would
        `kubectl wait --for=jsonpath='{.status.active}'=true`)."""
        listed = kube_apiserver.kubectl("get", "budgetoverrides", "-n", namespace, "-o", "json")
        items = json.loads(listed.stdout)["items"] if listed.returncode == 0 else [{}]
        return all((item.get("status") or {}).get("active") is True for item in items)

    await wait_until(overrides_active, APPLY_TIMEOUT_S)
    pod = identity_flags(folder, example.pod, namespace, tmp_path)
    sidecar = start_sidecar("--redis", redis_server.url, *pod)
    checked = example.check(clients_of(sidecar, opened_clients))
    if inspect.isawaitable(checked):
        await checked

    def status_of(kind: str, name: str) -> dict[str, Any]:
        found = kube_apiserver.kubectl("get", "-n", namespace, kind, name, "-o", "json")
        status: dict[str, Any] = json.loads(found.stdout).get("status") or {}
        return status

    async def shown() -> bool:
        return ON_A_CLUSTER[folder](status_of)

    try:
        await wait_until(shown, STATUS_TIMEOUT_S, poll_s=0.25)
    except AssertionError as error:
        listed = kube_apiserver.kubectl(
            "get", "-n", namespace, "teams,apikeys,ratelimits", "-o", "json"
        )
        statuses = {
            item["metadata"]["name"]: item.get("status")
            for item in json.loads(listed.stdout)["items"]
        }
        raise AssertionError(f"{error}; statuses: {statuses}") from error
