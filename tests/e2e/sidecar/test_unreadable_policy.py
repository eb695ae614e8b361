"""A policy this sidecar cannot read (written by a newer operator during a rolling
upgrade, or damaged in the store) refuses its key with a 503 that says so, never a 500.

The operator is upgraded before the Pods it injected are restarted, so for a while old
sidecars meet policies with fields they do not know yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from tests.e2e.sidecar.processes import Process, free_port, start
from tests.integration.store.scenario import api_key, policy_for

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.store import EmbeddedRedis

pytestmark = [pytest.mark.e2e]

KEY = "sk-unreadable-policy-1"


@pytest.fixture
def sidecar(
    tmp_path: Path, sidecar_redis: EmbeddedRedis, fake_upstream: Process
) -> Iterator[Process]:
    """A sidecar in operator mode (policies from the store only)."""
    key_file = tmp_path / "upstream-key"
    key_file.write_text("sk-upstream-real\n")
    port = free_port()
    process = start(
        ["sidecar", "--listen", f"127.0.0.1:{port}", "--upstream", fake_upstream.url,
         "--upstream-key-file", str(key_file), "--redis", sidecar_redis.url],
        tmp_path / "sidecar.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )  # fmt: skip
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(lambda policy: {**policy, "spendCapV9": {"daily": 5}}, id="unknown-field"),
        pytest.param(lambda policy: {**policy, "scopes": "many"}, id="wrong-type"),
    ],
)
def test_a_policy_the_sidecar_cannot_read_is_a_503_naming_it(
    sidecar: Process,
    redis_client: redis.Redis,
    stored: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    key_hash = hash_key(KEY)
    policy = policy_for(api_key("future-bot", budget={"maxBudget": 1}))
    written = stored(json.loads(policy.model_copy(update={"key_hash": key_hash}).model_dump_json()))
    redis_client.set(keyspace.policy_key(key_hash), json.dumps(written))
    redis_client.sadd(keyspace.POLICY_INDEX, key_hash)

    with (
        openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=KEY, max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as refused,
    ):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 503
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["code"] == "policy_incomplete"
    assert "PolicyUnreadable" in body["message"]
    assert "future-bot" in body["message"]
