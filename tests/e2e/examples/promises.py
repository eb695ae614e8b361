"""What each folder of examples/ promises in its README, as checks through the official
client. The same checks run against a standalone sidecar on the folder and against a
sidecar fed by the operator after `kubectl apply -f` of the folder; `EXAMPLES` names one
check per folder, and a folder without one fails the suite."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.support.waiting import wait_until

__all__ = ["EXAMPLES", "Example", "Reach", "Refusal"]

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MANY = 15  # the READMEs' loops: enough requests to exhaust what they exhaust
Reach = Callable[[str], openai.OpenAI]
"""An official client for a key (the folder's Secret) through the sidecar under test."""


@dataclass(frozen=True)
class Example:
    """A folder's README promises: the keys its Secrets hold, and the check."""

    keys: tuple[str, ...]
    check: Callable[[Reach], Awaitable[None] | None]


def _ask(client: openai.OpenAI, model: str = "gpt-4o-mini", **extra: object) -> int:
    """The status of one chat completion (200 or the refusal's)."""
    try:
        client.chat.completions.create(model=model, messages=MESSAGES, **extra)  # type: ignore[call-overload]
    except openai.APIStatusError as error:
        return error.status_code
    return 200


@dataclass(frozen=True)
class Refusal:
    """The first refusal of a run of requests, and how many were served before it."""

    served_before: int
    error: openai.APIStatusError

    @property
    def status(self) -> int:
        return self.error.status_code

    @property
    def body(self) -> dict[str, str]:
        body: dict[str, str] = self.error.response.json()["error"]
        return body

    @property
    def retry_after(self) -> int:
        return int(self.error.response.headers["retry-after"])


def _refused(
    client: openai.OpenAI, model: str = "gpt-4o-mini", *, within: int = MANY, **extra: object
) -> Refusal:
    """Send requests until one is refused (at most `within`)."""
    for served in range(within):
        try:
            client.chat.completions.create(model=model, messages=MESSAGES, **extra)  # type: ignore[call-overload]
        except openai.APIStatusError as error:
            return Refusal(served, error)
    pytest.fail(f"{within} requests all served")


def team_tiny_budget(reach: Reach) -> None:
    client = reach("sk-llmquota-example-tiny-budget")
    refusal = _refused(client)
    assert refusal.served_before == 1  # nothing was spent before the first
    assert (refusal.status, refusal.body["type"], refusal.body["code"]) == (
        402,
        "budget_exceeded",
        "budget_exceeded",
    )
    assert "team tiny-budget" in refusal.body["message"]
    assert "max budget 1e-09" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 86_400  # the one-day window


def _seconds_to_next_month() -> float:
    now = datetime.now(UTC)
    first = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return (first - now).total_seconds()


def team_member_cap(reach: Reach) -> None:
    refusal = _refused(reach("sk-llmquota-example-ishaan"))
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12  # "after roughly ten" replies of 0.00001 USD
    assert "member ishaan of team research" in refusal.body["message"]
    assert "max budget 0.0001" in refusal.body["message"]
    assert abs(refusal.retry_after - _seconds_to_next_month()) < 120  # the monthly window
    assert _ask(reach("sk-llmquota-example-krrish")) == 200  # the team is far from spent


def model_budgets(reach: Reach) -> None:
    client = reach("sk-llmquota-example-model-capped")
    refusal = _refused(client, "gpt-4o")
    assert (refusal.served_before, refusal.status) == (1, 402)
    message = refusal.body["message"]
    assert message.startswith("Model budget has been exceeded for key model-capped-key")
    assert "max budget 1e-06" in message
    assert _ask(client, "gpt-4o-mini") == 200
    not_allowed = _refused(client, "gpt-3.5-turbo")
    assert (not_allowed.status, not_allowed.body["code"]) == (403, "model_not_allowed")
    assert sorted(model.id for model in client.models.list()) == ["gpt-4o", "gpt-4o-mini"]


def per_customer_budget(reach: Reach) -> None:
    client = reach("sk-llmquota-example-support-bot")
    refusal = _refused(client, user="customer-42")
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12  # "about ten" replies
    assert "end user customer-42 of team support-bot" in refusal.body["message"]
    assert "max budget 0.0001" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 3600  # the hour's window
    assert _ask(client, user="customer-7") == 200  # a counter of its own
    assert _ask(client) == 200  # without `user`: the team's budget only


async def _early_in_a_minute() -> bool:
    return time.time() % 60 < 40


async def dynamic_tpm(reach: Reach) -> None:
    # The split is per minute: start early enough in one that it does not roll over.
    await wait_until(_early_in_a_minute, timeout_s=30, poll_s=0.5)
    prod, prod_2, dev = (reach(f"sk-llmquota-example-{name}") for name in ("prod", "prod-2", "dev"))
    for client in (prod, prod_2, dev):  # all three active this minute
        assert _ask(client, max_tokens=100) == 200
    shown = prod.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=100
    )
    assert shown.headers["x-ratelimit-limit-tokens"] == "450"  # prod's 900, split in two

    refusal = _refused(dev, max_tokens=100)
    assert (refusal.status, refusal.body["code"]) == (429, "rate_limit_exceeded")
    assert "key dev-key (Dynamic RateLimit shared-pool)" in refusal.body["message"]
    assert "share of the Dynamic tpm pool is 100" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 60
    assert _ask(prod, max_tokens=100) == 200  # prod keeps being admitted

    prod_refusal = _refused(prod_2, within=40, max_tokens=100)
    assert "share of the Dynamic tpm pool is 450" in prod_refusal.body["message"]


EXAMPLES = {
    "team-tiny-budget": Example(("sk-llmquota-example-tiny-budget",), team_tiny_budget),
    "team-member-cap": Example(
        ("sk-llmquota-example-ishaan", "sk-llmquota-example-krrish"), team_member_cap
    ),
    "model-budgets": Example(("sk-llmquota-example-model-capped",), model_budgets),
    "per-customer-budget": Example(("sk-llmquota-example-support-bot",), per_customer_budget),
    "dynamic-tpm": Example(
        tuple(f"sk-llmquota-example-{name}" for name in ("prod", "prod-2", "dev")), dynamic_tpm
    ),
}
"""Folder of examples/ -> its keys and its README's promises."""
