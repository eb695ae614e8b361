"""The seed scenario: a team with a budget of one nano-dollar per day admits one request,
then refuses the next with 402 and a message naming the team."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.sidecar.processes import ClientFactory, Sidecar, team_and_key
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.e2e


def test_seed_budget_serves_one_then_402(sidecar: Sidecar, clients: ClientFactory) -> None:
    key = "sk-seed-0001"
    sidecar.apply(
        "seed",
        team_and_key(
            "qa-prod-bot",
            "qa-bot",
            key,
            team_spec="{budget: {maxBudget: 0.000000001, budgetDuration: 1d}}",
        ),
        key,
    )
    client = clients(key)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert first.http_response.status_code == 200
    assert first.parse().choices[0].message.content
    assert first.headers["x-llmquota-budget-remaining"] == "0.000000000"

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["type"] == "budget_exceeded"
    assert "team qa-prod-bot" in error["message"]
    assert "max budget" in error["message"]
    retry_after = int(refused.value.response.headers["retry-after"])
    assert 0 < retry_after <= 86400
    assert key not in sidecar.process.log_text()

    def refusal_logged() -> bool:
        lines = sidecar.process.log_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return any(entry.get("outcome") == "budget_exceeded" for entry in entries)

    # Request log lines are written in batches (see sidecar/logs.py).
    wait_until_sync(refusal_logged, 5, what="the refusal's log line")
