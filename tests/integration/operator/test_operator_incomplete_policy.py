"""A key whose referenced Budget is deleted or renamed is refused for what is really
wrong: the operator keeps a policy marked incomplete, and a real sidecar (through the
official openai client) answers 503 policy_incomplete naming the Budget, not 401
invalid_api_key as for a key nobody knows."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.sidecar.processes import Process, free_port, start
from tests.integration.operator.operator_helpers import Cluster, wait_for

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def sidecar_url(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[str]:
    """A fake upstream and `llmquota sidecar` on the operator's Redis (no manifests)."""
    directory: Path = tmp_path_factory.mktemp("incomplete")
    upstream_port, sidecar_port = free_port(), free_port()
    upstream = start(
        ["fake-upstream", "--listen", f"127.0.0.1:{upstream_port}"],
        directory / "upstream.log",
        f"http://127.0.0.1:{upstream_port}",
        "/_fake/requests",
    )
    processes: list[Process] = [upstream]
    try:
        (directory / "upstream-key").write_text("sk-upstream\n")
        sidecar_args = [
            "sidecar", "--listen", f"127.0.0.1:{sidecar_port}", "--upstream", upstream.url,
            "--upstream-key-file", str(directory / "upstream-key"), "--redis", redis_server.url,
        ]  # fmt: skip
        sidecar = start(
            sidecar_args, directory / "sidecar.log", f"http://127.0.0.1:{sidecar_port}", "/readyz"
        )
        processes.append(sidecar)
        yield processes[-1].url
    finally:
        for process in reversed(processes):
            process.stop()


def chat(sidecar_url: str, key: str) -> openai.APIStatusError | None:
    """One chat completion; the error it ends in, None when it succeeded."""
    with openai.OpenAI(base_url=f"{sidecar_url}/v1", api_key=key, max_retries=0) as client:
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        except openai.APIStatusError as error:
            return error
    return None


def written(db: redis.Redis, key: str) -> ResolvedPolicy | None:
    raw = db.get(keyspace.policy_key(hash_key(key)))
    return None if raw is None else ResolvedPolicy.model_validate_json(raw)


@pytest.mark.parametrize("break_it", ["delete", "rename"])
def test_a_key_whose_budget_is_gone_is_refused_as_incomplete_not_unknown(
    cluster: Cluster, db: redis.Redis, sidecar_url: str, break_it: str
) -> None:
    budget, key_name = f"tier-{break_it}", f"key-{break_it}"
    cluster.apply(
        {"kind": "Budget", "metadata": {"name": budget}, "spec": {"maxBudget": 10}},
        {"kind": "ApiKey", "metadata": {"name": key_name}, "spec": {"budgetRef": {"name": budget}}},
    )
    wait_for(
        lambda: (c := cluster.condition("apikey", key_name, "Ready")) and c["status"] == "True",
        what="Ready",
    )
    secret = cluster.get("secret", key_name)
    assert secret is not None
    key = base64.b64decode(secret["data"]["key"]).decode()
    wait_for(lambda: written(db, key), what="policy written")
    assert chat(sidecar_url, key) is None
    if break_it == "delete":
        cluster.kubectl("delete", "budget", budget, "--wait=true", "--timeout=30s")
    else:  # the Budget renamed: the key now references a name that does not exist
        cluster.apply(
            {"kind": "Budget", "metadata": {"name": f"{budget}-v2"}, "spec": {"maxBudget": 10}}
        )
        cluster.kubectl("delete", "budget", budget, "--wait=true", "--timeout=30s")

    def marked_incomplete() -> ResolvedPolicy | None:
        policy = written(db, key)
        return policy if policy is not None and policy.refusal is not None else None

    incomplete = wait_for(marked_incomplete, what="the policy marked incomplete")
    assert incomplete.refusal is not None
    assert incomplete.refusal.reason == "BudgetNotFound"
    assert incomplete.scopes == []  # nothing of it applies: it only refuses

    def refused() -> openai.APIStatusError | None:
        error = chat(sidecar_url, key)
        return error if error is not None and error.status_code != 200 else None

    error = wait_for(refused, what="the sidecar refuses the key")
    assert error.status_code == 503
    body = error.response.json()["error"]
    assert (body["type"], body["code"]) == ("service_unavailable", "policy_incomplete")
    assert budget in body["message"]
    assert "spec.budgetRef" in body["message"]
    # A key nobody has is still 401: the two are told apart.
    unknown = chat(sidecar_url, "sk-nobody-has-this-key")
    assert unknown is not None
    assert unknown.status_code == 401
