"""What a whole answer says about its own cost, through the official client: the
`x-llmquota-response-cost` it was charged, the budget left after it, and a next
request that finds it settled (#15; #11 items 6 and 8)."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.sidecar.processes import ClientFactory, Sidecar, team_and_key

from llmquota.policy import keyspace
from llmquota.policy.limits import NANOS_PER_USD
from llmquota.policy.resolve import team_scope_id

pytestmark = pytest.mark.e2e

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
SEQUENTIAL_CALLS = 30


def team_spend(sidecar: Sidecar, team: str) -> tuple[int, int]:
    """The team's settled and reserved nano-USD, read at once (no waiting)."""
    counter_key = keyspace.budget_key(f"default/{team}", team_scope_id("default", team))
    spend, reserved = sidecar.redis.hmget(counter_key, ["spend", "resv"])
    return int(spend or 0), int(reserved or 0)


def apply_team(sidecar: Sidecar, name: str, max_budget: str) -> str:
    secret = f"sk-{name}"
    sidecar.apply(
        name,
        team_and_key(
            f"{name}-team", name, secret, team_spec=f"{{budget: {{maxBudget: {max_budget}}}}}"
        ),
        secret,
    )
    return secret


def test_a_whole_answer_carries_the_cost_it_was_charged(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    client = clients(apply_team(sidecar, "cost-header", "10"))
    for _ in range(3):
        before, _ = team_spend(sidecar, "cost-header-team")
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
        raw.parse()
        after, reserved = team_spend(sidecar, "cost-header-team")
        # Settled before the answer ended: nothing is left reserved.
        assert reserved == 0
        cost = raw.headers["x-llmquota-response-cost"]
        assert round(float(cost) * NANOS_PER_USD) == after - before > 0


def test_the_budget_left_counts_the_requests_real_cost_not_its_reservation(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    # 0.0001 USD: less than the reservation of a call without max_tokens (256 output
    # tokens of gpt-4o-mini, 0.000155), more than its real cost.
    client = clients(apply_team(sidecar, "remaining-header", "0.0001"))
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    raw.parse()
    spend, reserved = team_spend(sidecar, "remaining-header-team")
    assert reserved == 0
    remaining = float(raw.headers["x-llmquota-budget-remaining"])
    assert round(remaining * NANOS_PER_USD) == round(0.0001 * NANOS_PER_USD) - spend > 0


def test_sequential_calls_never_meet_their_own_reservations(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    client = clients(apply_team(sidecar, "sequential", "0.0002"))
    still_reserved = []
    refused: openai.APIStatusError | None = None
    for _ in range(SEQUENTIAL_CALLS):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        except openai.APIStatusError as error:
            refused = error
            break
        # What the client's next request will find: this one settled.
        still_reserved.append(team_spend(sidecar, "sequential-team")[1])
    assert set(still_reserved) == {0}
    # Only a budget really spent refuses.
    assert refused is not None, "the budget never ran out"
    assert refused.status_code == 402
    assert team_spend(sidecar, "sequential-team")[0] >= round(0.0002 * NANOS_PER_USD)
