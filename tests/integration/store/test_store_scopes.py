"""Each scope refuses on its own and names itself, while the others still have room."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.store.scenario import (
    CENT,
    api_key,
    attempt,
    budget,
    policy_for,
    team,
)

from llmquota.models import Team
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

ROOMY = {"maxBudget": 10, "budgetDuration": "30d"}


async def spend(
    store: QuotaStore,
    policy: ResolvedPolicy,
    times: int,
    model: str = "gpt-4o-mini",
    end_user: str | None = None,
) -> None:
    """Admit and settle `times` requests charged a cent each.

    Each reserves half a cent, so that the last cent of a shared budget fits within the
    half of what is left that one key may hold there (`admission.KEY_SHARE`).
    """
    for _ in range(times):
        outcome = await attempt(store, policy, model=model, end_user=end_user, cost_nanos=CENT // 2)
        assert outcome.admitted
        assert await store.settle(outcome.request_id, CENT, 100) == 1


async def spend_of(store: QuotaStore, policy: ResolvedPolicy, kind: str) -> int:
    """Settled spend in the current counter of the policy's scope of `kind`."""
    scope = next(scope for scope in policy.scopes if scope.kind == kind)
    [counter] = await store.read_budgets([(scope.tag, scope.id)])
    return counter.spend_nanos


def qa_team(**spec: Any) -> Team:
    """Team qa with a roomy budget unless `spec` says otherwise."""
    return team("qa", **{"budget": ROOMY, **spec})


async def test_member_cap_refuses_the_member_and_not_the_team(clocked_store: QuotaStore) -> None:
    qa = qa_team(members=[{"user": "ishaan", "maxBudgetInTeam": 0.02}])
    ishaan = policy_for(api_key("ishaan-key", team="qa", user="ishaan", budget=ROOMY), qa)
    teammate = policy_for(api_key("other-key", team="qa", budget=ROOMY), qa)
    await spend(clocked_store, ishaan, 2)

    refused = (await attempt(clocked_store, ishaan)).refusal
    assert (refused.status, refused.limit) == (402, "max_budget")
    assert refused.scope_label == "member ishaan of team qa"
    assert refused.message.startswith(
        "Budget has been exceeded for member ishaan of team qa: spend 0.02, max budget 0.02"
    )
    assert (await attempt(clocked_store, teammate)).admitted
    assert await spend_of(clocked_store, ishaan, "team") == 2 * CENT


async def test_end_user_budget_refuses_that_end_user_only(clocked_store: QuotaStore) -> None:
    per_customer = budget("per-customer", maxBudget=0.02, budgetDuration="1d")
    qa = qa_team(endUserBudgetRef={"name": "per-customer"})
    bot = policy_for(api_key("bot", team="qa", budget=ROOMY), qa, budgets=[per_customer])
    await spend(clocked_store, bot, 2, end_user="cust-1")

    refused = (await attempt(clocked_store, bot, end_user="cust-1")).refusal
    assert (refused.status, refused.limit) == (402, "max_budget")
    assert refused.scope_label == "end user cust-1 of team qa"
    assert "spend 0.02, max budget 0.02" in refused.message
    assert (await attempt(clocked_store, bot, end_user="cust-2")).admitted
    assert (await attempt(clocked_store, bot)).admitted


async def test_model_budget_refuses_that_model_only(clocked_store: QuotaStore) -> None:
    bot = policy_for(api_key("bot", budget={**ROOMY, "modelMaxBudget": {"gpt-4o": 0.02}}))
    await spend(clocked_store, bot, 2, model="gpt-4o")

    refused = (await attempt(clocked_store, bot, model="gpt-4o")).refusal
    assert (refused.status, refused.limit) == (402, "model_max_budget")
    assert refused.scope_label == "key bot"
    assert refused.message.startswith("Model budget has been exceeded for key bot: spend 0.02")
    assert (await attempt(clocked_store, bot, model="gpt-4o-mini")).admitted


async def test_global_budget_refuses_every_key(clocked_store: QuotaStore) -> None:
    everything = budget("everything", maxBudget=0.02, budgetDuration="monthly")
    qa = qa_team()
    bot = policy_for(api_key("bot", team="qa", budget=ROOMY), qa, global_budget=everything)
    loner = policy_for(api_key("loner", budget=ROOMY), global_budget=everything)
    await spend(clocked_store, bot, 1)
    await spend(clocked_store, loner, 1)

    for policy in (bot, loner):
        refused = (await attempt(clocked_store, policy)).refusal
        assert (refused.status, refused.limit) == (402, "max_budget")
        assert refused.scope_label == "the global budget"
        assert "spend 0.02, max budget 0.02" in refused.message
    assert await spend_of(clocked_store, bot, "team") == CENT
    assert await spend_of(clocked_store, bot, "key") == CENT


async def test_team_budget_is_shared_by_its_keys(clocked_store: QuotaStore) -> None:
    qa = qa_team(budget={"maxBudget": 0.02, "budgetDuration": "1h"})
    first = policy_for(api_key("first", team="qa", budget=ROOMY), qa)
    second = policy_for(api_key("second", team="qa", budget=ROOMY), qa)
    await spend(clocked_store, first, 1)
    await spend(clocked_store, second, 1)
    for policy in (first, second):
        refused = (await attempt(clocked_store, policy)).refusal
        assert refused.scope_label == "team qa"


async def test_key_budget_counts_in_flight_reservations(clocked_store: QuotaStore) -> None:
    bot = policy_for(api_key("bot", budget={"maxBudget": 0.02, "budgetDuration": "1h"}))
    await spend(clocked_store, bot, 1)
    in_flight = await attempt(clocked_store, bot)
    assert in_flight.admitted

    refused = (await attempt(clocked_store, bot)).refusal
    assert refused.scope_label == "key bot"
    assert "spend 0.01 (+0.01 reserved in flight), max budget 0.02" in refused.message
    assert await clocked_store.abort(in_flight.request_id) == 1
    assert (await attempt(clocked_store, bot)).admitted


async def test_a_key_without_budget_is_counted_not_refused(clocked_store: QuotaStore) -> None:
    bot = policy_for(api_key("bot"))
    await spend(clocked_store, bot, 3)
    assert await spend_of(clocked_store, bot, "key") == 3 * CENT
