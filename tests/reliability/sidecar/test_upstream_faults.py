"""Upstream faults through the sidecar, seen with the official openai client
(max_retries=0): the client gets a sensible error or the partial stream, and the key
is charged nothing for a failed request, or what was streamed before a cut."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.reliability.harness import wait_until
from tests.reliability.rig import Rig

from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.pricing import estimate_request, load_price_table

pytestmark = pytest.mark.e2e

KEY = "sk-reliability-faults-0001"
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: faults-bot}}
spec: {{budget: {{maxBudget: 100}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: faults-bot}}
stringData: {{key: {KEY}}}
"""
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a story about budgets."}
]


class Faults:
    """One sidecar and key, asking with a fault and reading what it cost."""

    def __init__(self, rig: Rig, policy: ResolvedPolicy, client: openai.OpenAI) -> None:
        self.rig = rig
        self.policy = policy
        self.client = client

    async def charge_of(self, ask: Callable[[], Any]) -> tuple[int, Any]:
        """Run `ask` in a thread; the spend it added once settled, and its result or error."""
        before, _ = await self.rig.spend(self.policy)
        try:
            outcome: Any = await asyncio.to_thread(ask)
        except (openai.OpenAIError, httpx2.HTTPError, ValueError) as error:
            outcome = error

        async def settled() -> bool:
            # The sidecar answers first and settles (or aborts) right after.
            return (await self.rig.spend(self.policy))[1] == 0

        await wait_until(settled, timeout_s=15)
        after, _ = await self.rig.spend(self.policy)
        return after - before, outcome

    def chat(self, fault: str, **options: Any) -> Callable[[], Any]:
        def ask() -> Any:
            return self.client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=16,
                extra_headers={"x-fake-fault": fault},
                **options,
            )

        return ask

    def streamed(self, fault: str) -> Callable[[], Any]:
        """Read a stream to its end: the text received, or the error that cut it."""

        def ask() -> Any:
            text: list[str] = []
            stream = self.client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=16,
                stream=True,
                extra_headers={"x-fake-fault": fault},
            )
            try:
                for chunk in stream:
                    text.extend(choice.delta.content or "" for choice in chunk.choices)
            except (openai.OpenAIError, httpx2.HTTPError) as error:
                return ("cut", "".join(text), error)
            return ("whole", "".join(text), None)

        return ask


@pytest.fixture
async def faults(rig: Rig) -> Faults:
    policy = (await rig.apply(MANIFESTS))["faults-bot"]
    sidecar = rig.start_sidecar("--upstream-timeout", "2")
    await rig.wait_for_policies([policy])
    return Faults(rig, policy, rig.client(sidecar, KEY, timeout=20))


@pytest.mark.parametrize(
    ("fault", "error_type", "status"),
    [
        ("status:500", openai.InternalServerError, 500),
        ("status:503", openai.InternalServerError, 503),
        ("status:429", openai.RateLimitError, 429),
        ("status:400", openai.BadRequestError, 400),
    ],
)
async def test_an_upstream_error_is_passed_through_and_costs_nothing(
    faults: Faults, fault: str, error_type: type[openai.APIStatusError], status: int
) -> None:
    charged, outcome = await faults.charge_of(faults.chat(fault))
    assert isinstance(outcome, error_type)
    assert outcome.status_code == status
    assert charged == 0


async def test_an_upstream_slower_than_the_timeout_is_a_504_that_costs_nothing(
    faults: Faults,
) -> None:
    charged, outcome = await faults.charge_of(faults.chat("delay:5"))
    assert isinstance(outcome, openai.APIStatusError)
    assert outcome.status_code == 504
    assert charged == 0


async def test_a_client_that_gives_up_is_not_charged(faults: Faults) -> None:
    charged, outcome = await faults.charge_of(faults.chat("delay:1.5", timeout=0.5))
    assert isinstance(outcome, openai.APITimeoutError)
    assert charged == 0


async def test_a_stream_cut_mid_way_reaches_the_client_and_costs_what_was_streamed(
    faults: Faults,
) -> None:
    whole_cost, whole = await faults.charge_of(faults.streamed("none"))
    cut_cost, cut = await faults.charge_of(faults.streamed("reset-mid-stream"))
    assert whole[0] == "whole"
    assert cut[0] == "cut", cut
    assert isinstance(cut[2], openai.APIConnectionError)
    assert whole[1].startswith(cut[1])
    assert 0 < len(cut[1]) < len(whole[1])
    assert whole_cost > 0
    assert cut_cost > 0


@pytest.mark.parametrize("fault", ["reset-mid-stream", "no-usage"])
async def test_a_stream_without_usage_costs_at_most_its_reservation(
    faults: Faults, fault: str
) -> None:
    cost, _ = await faults.charge_of(faults.streamed(fault))
    assert 0 < cost <= reserved_for(MESSAGES)


async def test_a_reply_whose_usage_cannot_be_read_is_charged_the_estimate(
    faults: Faults,
) -> None:
    malformed_cost, malformed = await faults.charge_of(faults.chat("malformed-json"))
    no_usage_cost, no_usage = await faults.charge_of(faults.chat("no-usage"))
    # The openai client cannot parse the body; the upstream answered 200 and most
    # likely billed the request, so it is charged what was reserved for it.
    assert isinstance(malformed, ValueError)
    assert malformed_cost == reserved_for(MESSAGES)
    assert no_usage.usage is None
    assert no_usage.choices[0].message.content
    assert no_usage_cost == reserved_for(MESSAGES)


def reserved_for(messages: list[ChatCompletionMessageParam]) -> int:
    """Nano-USD the sidecar reserves for one request of this file (prompt + max_tokens)."""
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 16}
    estimate = estimate_request("chat/completions", body)
    return nanos(
        load_price_table(None).cost(
            "gpt-4o-mini", estimate.prompt_tokens, estimate.max_completion_tokens
        )
    )
