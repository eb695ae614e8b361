"""A BudgetOverride through the sidecar, with the official openai client: the exhausted
key is served again within a second of the override's file appearing, and refused
again at the instant it expires (the admit script reads Redis' clock, so no reload is
needed for the end)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.sidecar.processes import ClientFactory, Sidecar, team_and_key
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
KEY = "sk-override-0001"
APPLY_WITHIN_S = 1.0


def status_of(client: openai.OpenAI) -> int:
    """The HTTP status of one small chat completion through the sidecar."""
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4)
    except openai.APIStatusError as error:
        return error.status_code
    return 200


def served(client: openai.OpenAI) -> bool:
    status = status_of(client)
    assert status in (200, 402), status
    return status == 200


async def test_an_override_lifts_an_exhausted_key_until_it_expires(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    client = clients(KEY)
    sidecar.apply(
        "override-key",
        team_and_key("override-team", "override-key", KEY, key_fields="budget: {maxBudget: 1e-9}"),
        KEY,
    )
    assert served(client)  # the first request is admitted, and spends the budget
    assert not served(client)

    expires = datetime.now(UTC) + timedelta(seconds=4)
    (sidecar.manifests / "raise.yaml").write_text(
        f"""
apiVersion: llmquota.dev/v1alpha1
kind: BudgetOverride
metadata: {{name: raise}}
spec:
  target: {{kind: ApiKey, name: override-key}}
  increase: 5
  expires: "{expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"
  reason: e2e test
"""
    )
    written = time.monotonic()

    async def lifted() -> bool:
        return served(client)

    await wait_until(lifted, timeout_s=5, what="served again after the override")
    took = time.monotonic() - written
    assert took < APPLY_WITHIN_S, f"served again {took:.2f}s after the override was written"

    async def refused_again() -> bool:
        return not served(client)

    await wait_until(refused_again, timeout_s=10)
    assert datetime.now(UTC) >= expires, "refused before the override expired"
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4)
    assert refused.value.status_code == 402
    assert "key override-key" in refused.value.response.json()["error"]["message"]
