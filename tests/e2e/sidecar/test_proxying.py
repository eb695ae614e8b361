"""Proxying through the official client: streams (sync and async), other endpoints,
upstream failures, what goes upstream, metrics."""

from __future__ import annotations

import urllib.request

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.sidecar.processes import (
    ClientFactory,
    Process,
    Sidecar,
    team_and_key,
)
from tests.support.waiting import wait_until_sync

from llmquota.policy import keyspace
from llmquota.policy.resolve import team_scope_id

pytestmark = pytest.mark.e2e

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def team_counter(sidecar: Sidecar, team: str) -> dict[str, int]:
    """The team's budget counter in Redis once nothing is reserved any more: the sidecar
    answers first and settles right after, so a test waits for the settlement."""
    counter_key = keyspace.budget_key(f"default/{team}", team_scope_id("default", team))

    def read() -> dict[str, int]:
        raw = sidecar.redis.hgetall(counter_key)
        return {_text(name): int(value) for name, value in raw.items()}

    wait_until_sync(lambda: read().get("resv", 0) == 0, 5, what=f"{team}'s reservations settled")
    return read()


def sample(metrics: str, metric: str, /, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for family in text_string_to_metric_families(metrics):
        for found in family.samples:
            if found.name == metric and found.labels == labels:
                return float(found.value)
    return None


@pytest.fixture
def key(sidecar: Sidecar, request: pytest.FixtureRequest) -> str:
    """A fresh team with a budget and a key in it, named after the test."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40]
    secret = f"sk-{name}"
    sidecar.apply(
        name,
        team_and_key(f"{name}-team", name, secret, team_spec="{budget: {maxBudget: 10}}"),
        secret,
    )
    return secret


def team_of(key: str) -> str:
    return f"{key.removeprefix('sk-')}-team"


def test_stream_without_include_usage_hides_the_usage_chunk(
    sidecar: Sidecar, clients: ClientFactory, key: str
) -> None:
    chunks = list(
        clients(key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert chunks
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text
    counter = team_counter(sidecar, team_of(key))
    assert counter["spend"] > 0
    assert counter["resv"] == 0


def test_stream_with_include_usage_keeps_the_usage_chunk(
    sidecar: Sidecar, clients: ClientFactory, key: str
) -> None:
    chunks = list(
        clients(key).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    assert team_counter(sidecar, team_of(key))["spend"] > 0


async def test_async_client_streams_and_completes(sidecar: Sidecar, key: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{sidecar.url}/v1", api_key=key, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert completion.usage is not None
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(piece or "" for piece in pieces) == completion.choices[0].message.content


def test_other_endpoints_are_proxied_and_charged(
    sidecar: Sidecar, clients: ClientFactory, key: str
) -> None:
    client = clients(key)
    spent = []
    embedding = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert embedding.data
    spent.append(team_counter(sidecar, team_of(key))["spend"])
    response = client.responses.create(model="gpt-4o-mini", input="hello")
    assert response.output_text
    spent.append(team_counter(sidecar, team_of(key))["spend"])
    completion = client.completions.create(model="gpt-4o-mini", prompt="hello")
    assert completion.choices[0].text
    spent.append(team_counter(sidecar, team_of(key))["spend"])
    with client.responses.stream(model="gpt-4o-mini", input="hello") as events:
        final = events.get_final_response()
    assert final.usage is not None
    spent.append(team_counter(sidecar, team_of(key))["spend"])
    assert spent == sorted(set(spent))
    assert spent[0] > 0


def test_upstream_500_is_passed_through_and_nothing_is_charged(
    sidecar: Sidecar, clients: ClientFactory, key: str
) -> None:
    client = clients(key)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    before = team_counter(sidecar, team_of(key))
    assert before["spend"] > 0
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-fake-fault": "status:500"}
        )
    assert failed.value.status_code == 500
    assert "fake upstream fault" in failed.value.message
    assert team_counter(sidecar, team_of(key)) == before


def test_stream_cut_midway_is_charged_for_what_was_streamed(
    sidecar: Sidecar, clients: ClientFactory, key: str
) -> None:
    stream = clients(key).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-fake-fault": "reset-mid-stream"},
    )
    with pytest.raises(openai.APIError):  # the client sees the cut, not a clean end
        list(stream)
    counter = team_counter(sidecar, team_of(key))
    assert counter["spend"] > 0
    assert counter["resv"] == 0


def test_client_key_never_reaches_the_upstream(
    fake_upstream: Process, clients: ClientFactory, key: str
) -> None:
    clients(key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with urllib.request.urlopen(f"{fake_upstream.url}/_fake/requests") as response:
        recorded = response.read().decode()
    assert key not in recorded
    assert "Bearer sk-upstream-real" in recorded


def test_metrics_name_the_key_not_its_secret(
    sidecar: Sidecar, clients: ClientFactory, key: str
) -> None:
    # max_tokens: without it the reservation is the model's output limit (about $0.08).
    clients(key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
    with urllib.request.urlopen(f"{sidecar.url}/metrics") as response:
        metrics = response.read().decode()
    name, team = key.removeprefix("sk-"), team_of(key)
    # `workload` is empty: this sidecar was not injected into a Pod (no --workload).
    subject = {"namespace": "default", "team": team, "key": name, "model": "gpt-4o-mini",
               "workload": ""}  # fmt: skip
    assert sample(metrics, "llmquota_requests_total", **subject, outcome="served") == 1
    spend = sample(metrics, "llmquota_spend_usd_total", **subject)
    assert spend is not None
    assert spend > 0
    assert sample(metrics, "llmquota_tokens_total", **subject, direction="output") == 16
    remaining = sample(
        metrics,
        "llmquota_remaining_budget_usd",
        namespace="default",
        kind="team",
        name=team,
        window="none",
        enforcement="Enforce",
    )
    assert remaining is not None
    assert 9.99 < remaining < 10
    assert "llmquota_overhead_seconds_bucket" in metrics
    assert key not in metrics


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
