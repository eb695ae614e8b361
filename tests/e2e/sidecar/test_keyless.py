"""Keyless requests through real sidecars on one Redis, with the official client.

Each sidecar stands in for one injected Pod: the webhook's downward API files in a
folder (`--identity-dir`) and `--workload`. The identity comes from there only: a known
key still wins, a Pod of another namespace matches nothing, and each workload has its
own counter of the Team's workloadBudgetRef.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.sidecar.processes import Process, start_sidecar
from tests.support.waiting import wait_until_sync

from llmquota.policy import keyspace
from llmquota.store import EmbeddedRedis

pytestmark = [pytest.mark.e2e]

SELECTING = """
apiVersion: llmquota.dev/v1alpha1
kind: Budget
metadata: {name: kl-per-workload}
spec: {maxBudget: 0.000000001, budgetDuration: 1d}
---
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: kl-support}
spec:
  budget: {maxBudget: 100, budgetDuration: 1d}
  workloadSelector:
    matchLabels: {llm-team: kl-support}
    matchExpressions: [{key: tier, operator: NotIn, values: [experimental]}]
  workloadBudgetRef: {name: kl-per-workload}
"""
KEYED = """
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: kl-keyed}
spec: {}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: kl-bot}
spec: {team: kl-keyed}
---
apiVersion: v1
kind: Secret
metadata: {name: kl-bot}
stringData: {key: sk-keyless-test-known}
"""
MANIFESTS = f"{SELECTING}---{KEYED}"
MATCHED = 'llm-team="kl-support"\napp="drafter"\n'
Pod = Callable[[str, str, str], Process]
"""`pod(namespace, labels file, workload)`: a sidecar with that identity."""


@pytest.fixture
def pod(
    tmp_path: Path,
    sidecar_redis: EmbeddedRedis,
    redis_client: redis.Redis,
    fake_upstream: Process,
) -> Iterator[Pod]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "keyless.yaml").write_text(MANIFESTS)
    started: list[Process] = []

    def start_pod(namespace: str, labels: str, workload: str) -> Process:
        directory = tmp_path / f"pod-{len(started)}"
        identity = directory / "identity"
        identity.mkdir(parents=True)
        (identity / "namespace").write_text(namespace)
        (identity / "labels").write_text(labels)
        process = start_sidecar(
            directory, manifests, sidecar_redis.url, fake_upstream,
            "--identity-dir", str(identity), "--workload", workload,
        )  # fmt: skip
        started.append(process)
        return process

    yield start_pod
    for process in started:
        process.stop()
    redis_client.hdel(keyspace.workload_policies_key("default"), "kl-support")


def _statuses(sidecar: Process, key: str, count: int) -> list[int]:
    client = openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=key, max_retries=0)
    statuses = []
    try:
        for _ in range(count):
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
                statuses.append(200)
            except openai.APIStatusError as error:
                statuses.append(error.status_code)
    finally:
        client.close()
    return statuses


def _served(sidecar: Process, **labels: str) -> float:
    with urllib.request.urlopen(f"{sidecar.url}/metrics") as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmquota_requests_total"
        and sample.labels.get("outcome") == "served"
        and labels.items() <= sample.labels.items()
    )


def _policy_written(redis_client: redis.Redis) -> None:
    wait_until_sync(
        lambda: redis_client.hexists(keyspace.workload_policies_key("default"), "kl-support"),
        30,
        what="the Team's workload policy",
    )


def test_each_workload_has_its_own_budget_and_a_known_key_wins(
    pod: Pod, redis_client: redis.Redis
) -> None:
    drafter = pod("default", MATCHED, "deployment/drafter")
    _policy_written(redis_client)
    summarizer = pod("default", MATCHED, "deployment/summarizer")
    # No key the sidecar knows: charged to the team and to the drafter's own counter.
    assert _statuses(drafter, "sk-not-a-virtual-key", 2) == [200, 402]
    # The summarizer, same team and labels, has a counter of its own.
    assert _statuses(summarizer, "sk-not-a-virtual-key", 1) == [200]
    # A known key in the same Pod is that key's, not the workload's.
    assert _statuses(drafter, "sk-keyless-test-known", 1) == [200]
    assert _served(drafter, key="kl-bot", team="kl-keyed", workload="deployment/drafter") == 1
    assert _served(drafter, key="", team="kl-support", workload="deployment/drafter") == 1
    spent = redis_client.smembers(
        keyspace.workload_index_key("default/kl-support", "team/default/kl-support")
    )
    assert {m.decode() if isinstance(m, bytes) else m for m in spent} == {
        "workload/default/kl-support/deployment/drafter",
        "workload/default/kl-support/deployment/summarizer",
    }


def test_no_matching_team_is_401_as_without_identity(pod: Pod, redis_client: redis.Redis) -> None:
    pod("default", MATCHED, "deployment/loader")  # loads the manifests
    _policy_written(redis_client)
    elsewhere = pod("other", MATCHED, "deployment/drafter")
    experimental = pod("default", MATCHED + 'tier="experimental"\n', "deployment/lab")
    assert _statuses(elsewhere, "sk-not-a-virtual-key", 1) == [401]
    assert _statuses(experimental, "sk-not-a-virtual-key", 1) == [401]


def test_a_team_selecting_the_pod_later_is_followed_by_the_running_sidecar(
    pod: Pod, redis_client: redis.Redis, tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests" / "keyless.yaml"
    manifests.write_text(KEYED)  # no Team selects the Pod yet
    late = pod("default", MATCHED, "deployment/late")
    assert _statuses(late, "sk-not-a-virtual-key", 1) == [401]  # and that is cached
    manifests.write_text(MANIFESTS)
    _policy_written(redis_client)
    wait_until_sync(
        lambda: _statuses(late, "sk-not-a-virtual-key", 1) == [200],
        30,
        what="the new Team's workload policy followed by the sidecar",
    )


def test_a_workload_policy_the_sidecar_cannot_read_is_a_503_naming_it(
    pod: Pod, redis_client: redis.Redis
) -> None:
    """During a rolling upgrade a newer operator writes fields an older sidecar does not
    know: a Pod's keyless requests get the 503 a key gets, not a 401 saying it has no key."""
    drafter = pod("default", MATCHED, "deployment/drafter")
    _policy_written(redis_client)
    name = keyspace.workload_policies_key("default")
    written = json.loads(redis_client.hget(name, "kl-support") or "{}")
    redis_client.hset(name, "kl-support", json.dumps({**written, "spendCapV9": {"daily": 5}}))
    redis_client.publish(keyspace.POLICY_CHANNEL, keyspace.workload_policies_change("default"))

    client = openai.OpenAI(base_url=f"{drafter.url}/v1", api_key="sk-none", max_retries=0)

    def refusal() -> openai.APIStatusError | None:
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as error:
            return None if error.status_code == 402 else error  # 402: the old policy's
        return None

    try:
        refused = wait_until_sync(refusal, 30, what="a refusal after the policy changed")
    finally:
        client.close()
    assert refused.status_code == 503
    body = refused.body
    assert isinstance(body, dict)
    assert body["code"] == "policy_incomplete"
    assert "PolicyUnreadable" in body["message"]
    assert "kl-support" in body["message"]
