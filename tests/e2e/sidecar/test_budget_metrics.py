"""Budget gauges through a standalone sidecar: the remaining budget of every scope, by
window, and a soft budget's crossing as a metric and one log event."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.sidecar.processes import ClientFactory, Sidecar, team_and_key
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
GAUGE_TIMEOUT_S = 10.0


def samples(sidecar: Sidecar, metric: str) -> dict[frozenset[tuple[str, str]], float]:
    with urllib.request.urlopen(f"{sidecar.url}/metrics") as response:
        text = response.read().decode()
    return {
        frozenset(found.labels.items()): float(found.value)
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == metric
    }


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


async def test_every_budget_scope_has_its_remaining_by_window(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    key = "sk-gauges-0001"
    sidecar.apply(
        "gauges",
        team_and_key(
            "gauge-team",
            "gauge-key",
            key,
            team_spec="{budget: {maxBudget: 10, budgetDuration: 30d}}",
            key_fields="user: ana, budget: {maxBudget: 1, budgetDuration: 1d}",
        ),
        key,
    )
    clients(key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    team = labels(
        namespace="default", kind="team", name="gauge-team", window="30d", enforcement="Enforce"
    )
    own = labels(
        namespace="default", kind="key", name="gauge-key", window="1d", enforcement="Enforce"
    )

    async def both_shown() -> bool:
        found = samples(sidecar, "llmquota_remaining_budget_usd")
        return 9.99 < found.get(team, 0) < 10 and 0.99 < found.get(own, 0) < 1

    await wait_until(both_shown, GAUGE_TIMEOUT_S)
    member = labels(
        namespace="default",
        kind="member",
        name="gauge-team/ana",
        window="30d",
        enforcement="Enforce",
    )
    assert member not in samples(sidecar, "llmquota_remaining_budget_usd")  # no cap: no gauge
    assert key not in repr(samples(sidecar, "llmquota_remaining_budget_usd"))


async def test_a_soft_budget_crossing_is_a_metric_and_one_log_event(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    key = "sk-soft-0001"
    sidecar.apply(
        "soft",
        team_and_key(
            "soft-team",
            "soft-key",
            key,
            team_spec="{budget: {maxBudget: 10, softBudget: 0.00003, budgetDuration: 30d}}",
        ),
        key,
    )
    client = clients(key)
    exceeded = labels(namespace="default", kind="team", name="soft-team")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # ~0.00001 USD

    async def below() -> bool:
        return samples(sidecar, "llmquota_soft_budget_exceeded").get(exceeded) == 0

    await wait_until(below, GAUGE_TIMEOUT_S)
    for _ in range(5):  # past 0.00003, and on beyond it
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    async def crossed() -> bool:
        return samples(sidecar, "llmquota_soft_budget_exceeded").get(exceeded) == 1

    await wait_until(crossed, GAUGE_TIMEOUT_S)
    await asyncio.sleep(0)  # let a refresh after the last request land, then count
    counted = samples(sidecar, "llmquota_soft_budget_crossings_total")
    assert counted[exceeded] == 1

    def crossing_lines() -> list[dict[str, object]]:
        lines = sidecar.process.log_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [
            e
            for e in entries
            if e.get("msg") == "soft budget crossed" and e.get("scope_name") == "soft-team"
        ]

    async def logged() -> bool:
        return len(crossing_lines()) >= 1

    await wait_until(logged, GAUGE_TIMEOUT_S)
    [line] = crossing_lines()
    assert (line["scope_kind"], line["window"], line["soft_budget_usd"]) == ("team", "30d", 3e-05)
