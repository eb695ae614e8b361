"""Reservations that hold for real prompts and long streams, through the official client.

The fake upstream bills prompts as OpenAI does (o200k_base tokens), so a sidecar that
under-counts a Chinese or emoji prompt reserves too little, and concurrent requests then
spend past the budget by far more than one request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk
from tests.e2e.sidecar.processes import (
    Process,
    Sidecar,
    free_port,
    start,
    start_sidecar,
    team_and_key,
)
from tests.support.waiting import wait_until

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.pricing import load_price_table
from llmquota.store import EmbeddedRedis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# About 420 characters each: Chinese, emoji, mixed scripts (280-420 o200k tokens).
REAL_PROMPTS = [
    "我们今天讨论一下人工智能的发展历史以及未来的趋势。" * 17 + "人工智能的发展",
    "🚀🔥👍🏽 " * 84,
    "Привет, 世界! ¿Qué tal? नमस्ते 😀 " * 14,
]
BUDGET_USD = 0.001
CONCURRENT = 48
PRICES = load_price_table(None)


async def charged(sidecar: Sidecar, key: str, expected: int) -> None:
    """Wait until the key's own budget counter has settled at `expected` nano-USD (settles
    land in the background, after the response)."""
    encoded = sidecar.redis.get(keyspace.policy_key(hash_key(key)))
    assert isinstance(encoded, bytes)
    policy = ResolvedPolicy.model_validate_json(encoded)
    scope = next(scope for scope in policy.scopes if scope.kind == "key")
    name = keyspace.budget_key(scope.tag, scope.id)

    async def settled() -> bool:
        return int(sidecar.redis.hget(name, "spend") or 0) == expected

    try:
        await wait_until(settled, timeout_s=10)
    finally:
        assert int(sidecar.redis.hget(name, "spend") or 0) == expected


async def ask(client: openai.AsyncOpenAI, prompt: str) -> openai.types.CompletionUsage | None:
    """One chat request held 0.5 s at the upstream, so that all are in flight at once;
    its usage, or None when refused with 402."""
    try:
        answer = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,
            extra_headers={"x-fake-fault": "delay:0.5"},
        )
    except openai.APIStatusError as refused:
        if refused.status_code != 402:
            raise
        return None
    return answer.usage


async def test_concurrent_real_prompts_overshoot_by_at_most_one_request(sidecar: Sidecar) -> None:
    key = "sk-real-prompts"
    sidecar.apply(
        "real-prompts",
        team_and_key(
            "real-prompts",
            "real-prompts",
            key,
            key_fields=f"budget: {{maxBudget: {BUDGET_USD}, budgetDuration: 1d}}",
        ),
        key,
    )
    client = openai.AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key=key, max_retries=0)
    async with client:
        usages = await asyncio.gather(
            *(ask(client, REAL_PROMPTS[index % 3]) for index in range(CONCURRENT))
        )
    costs = [
        PRICES.cost("gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens)
        for usage in usages
        if usage is not None
    ]
    assert 0 < len(costs) < CONCURRENT
    # What was served at the upstream's own count, within one request of the budget.
    assert sum(costs) <= BUDGET_USD + max(costs)
    await charged(sidecar, key, sum(nanos(cost) for cost in costs))


async def read_into(stream: AsyncStream[ChatCompletionChunk], received: list[str]) -> None:
    """Collect a stream's content until it ends (or breaks off)."""
    async for chunk in stream:
        received.extend(choice.delta.content or "" for choice in chunk.choices)


@pytest.fixture(scope="module")
def paced_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A fake upstream whose streams pause between events, so the sidecar reads them one
    at a time."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("paced") / "fake-upstream.log"
    process = start(
        [
            "fake-upstream", "--listen", f"127.0.0.1:{port}", "--require-key",
            "sk-upstream-real", "--chunk-delay-ms", "50", "--completion-tokens", "64",
            "--chunks", "16",
        ],
        log,
        url,
        "/_fake/requests",
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def small_window_sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    sidecar_redis: EmbeddedRedis,
    redis_client: redis.Redis,
    paced_upstream: Process,
) -> Iterator[Sidecar]:
    """A sidecar that prices `gpt-4o-small` at $1/M tokens with a 24-token context window."""
    directory: Path = tmp_path_factory.mktemp("small-window")
    manifests = directory / "manifests"
    manifests.mkdir()
    pricing = directory / "pricing.yaml"
    pricing.write_text(
        "models:\n  gpt-4o-small: {inputPerMillion: 1, outputPerMillion: 1, contextWindow: 24}\n"
    )
    process = start_sidecar(
        directory, manifests, sidecar_redis.url, paced_upstream, "--pricing", str(pricing)
    )
    yield Sidecar(process, manifests, redis_client)
    process.stop()


async def test_a_stream_past_its_reservation_is_stopped_and_charged_within_it(
    small_window_sidecar: Sidecar,
) -> None:
    """No max_tokens: the sidecar reserves what the context window leaves (24 - 1 prompt
    token); the upstream writes 64 tokens, and the stream is cut once it passes 23."""
    key = "sk-small-window"
    small_window_sidecar.apply(
        "small-window",
        team_and_key(
            "small-window",
            "small-window",
            key,
            key_fields="budget: {maxBudget: 1, budgetDuration: 1d}",
        ),
        key,
    )
    client = openai.AsyncOpenAI(
        base_url=f"{small_window_sidecar.url}/v1", api_key=key, max_retries=0
    )
    received: list[str] = []
    async with client:
        stream = await client.chat.completions.create(
            model="gpt-4o-small", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        with pytest.raises(openai.APIError):  # the cut reaches the client as an error
            await read_into(stream, received)
    streamed = "".join(received)
    assert 0 < len(streamed) < len(" llmquota") * 64
    # "hello" is 1 token, +4 for the message and +3 to prime the reply; the output is
    # charged at what was reserved for it, not at the 64 tokens the upstream would bill.
    await charged(small_window_sidecar, key, nanos((8 + 23) / 1e6))
