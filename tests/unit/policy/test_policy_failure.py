"""failurePolicy: money fails closed, rate limits open, and one Closed limit among a
request's scopes keeps it out while the store is unreachable; --fail-open overrides."""

from __future__ import annotations

import pytest
from tests.integration.store.scenario import api_key, budget, policy_for, rate_limit, team

from llmquota.policy.failure import closed_scope, fails_open


def test_the_defaults_are_closed_for_money_and_open_for_rates() -> None:
    policy = policy_for(api_key("k", budget={"maxBudget": 1}, rateLimit={"rpm": 5}))
    (scope,) = policy.scopes
    assert scope.budget is not None
    assert scope.rate is not None
    assert (scope.budget.fail_open, scope.rate.fail_open) == (False, True)
    assert closed_scope(policy.scopes) is scope
    assert not fails_open(policy.scopes, fail_open_flag=False)
    assert fails_open(policy.scopes, fail_open_flag=True)


@pytest.mark.parametrize(
    ("team_policy", "key_policy", "expected"),
    [
        ("Open", "Open", True),
        ("Closed", "Open", False),  # the team's money keeps the key's request out
        ("Open", "Closed", False),
    ],
)
def test_every_scope_must_be_open(team_policy: str, key_policy: str, expected: bool) -> None:
    squad = team("squad", budget={"maxBudget": 10, "failurePolicy": team_policy})
    key = api_key("k", team="squad", user="ishaan",
                  budget={"maxBudget": 1, "failurePolicy": key_policy})  # fmt: skip
    policy = policy_for(key, squad)
    assert [s.kind for s in policy.scopes] == ["team", "member", "key"]
    assert fails_open(policy.scopes, fail_open_flag=False) is expected


def test_referenced_limits_carry_their_policy_and_counting_only_never_closes() -> None:
    closed_rate = rate_limit("strict", rpm=5, failurePolicy="Closed")
    open_money = budget("tier", maxBudget=5, failurePolicy="Open")
    key = api_key("k", budgetRef={"name": "tier"})
    assert fails_open(policy_for(key, budgets=[open_money]).scopes, fail_open_flag=False)
    counting = api_key("c", rateLimitRef={"name": "strict"})  # no budget: counted only
    policy = policy_for(counting, rate_limits=[closed_rate])
    assert closed_scope(policy.scopes) is policy.scopes[0]
    assert fails_open(policy_for(api_key("free")).scopes, fail_open_flag=False)


def test_a_global_budget_fails_closed_unless_it_says_open() -> None:
    key = api_key("k", budget={"maxBudget": 1, "failurePolicy": "Open"})
    closed = policy_for(key, global_budget=budget("global", maxBudget=100))
    assert closed_scope(closed.scopes) is closed.scopes[0]
    opened = budget("global", maxBudget=100, failurePolicy="Open")
    assert fails_open(policy_for(key, global_budget=opened).scopes, fail_open_flag=False)
