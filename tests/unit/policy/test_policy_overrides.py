"""BudgetOverrides in the pure layer: which scope an override raises, by how much, and the
one rule (max in force at a time) that the admit script mirrors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.integration.store.scenario import api_key, budget_override, policy_for, team

from llmquota.models import BudgetOverride
from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.limits import BudgetIncrease, BudgetLimits, nanos

EXPIRES = datetime(2026, 12, 8, tzinfo=UTC)
EXPIRES_MS = int(EXPIRES.timestamp() * 1000)


def raise_(name: str, kind: str, target: str, increase: float = 50) -> BudgetOverride:
    return budget_override(
        name,
        target={"kind": kind, "name": target},
        increase=increase,
        expires=EXPIRES.isoformat(),
        reason="launch week",
    )


def test_the_max_in_force_counts_only_overrides_not_yet_expired() -> None:
    limits = BudgetLimits(
        max_nanos=nanos(10),
        increases=[
            BudgetIncrease(name="a", nanos=nanos(5), expires_ms=2_000),
            BudgetIncrease(name="b", nanos=nanos(1), expires_ms=1_000),
        ],
    )
    assert limits.max_nanos_at(999) == nanos(16)
    assert limits.max_nanos_at(1_000) == nanos(15)
    assert limits.max_nanos_at(2_000) == nanos(10)
    assert BudgetLimits(max_nanos=-1, increases=limits.increases).max_nanos_at(0) == -1


def test_an_override_raises_only_the_scope_it_names() -> None:
    squad = team("squad", budget={"maxBudget": 100})
    key = api_key("bot", team="squad", user="ishaan", budget={"maxBudget": 10})
    overrides = [
        raise_("for-key", "ApiKey", "bot", 5),
        raise_("for-team", "Team", "squad", 50),
        raise_("other-key", "ApiKey", "someone-else", 500),
        raise_("key-named-like-team", "ApiKey", "squad", 5000),
    ]
    policy = policy_for(key, squad, overrides=overrides)
    by_kind = {scope.kind: scope for scope in policy.scopes}
    assert by_kind["team"].budget is not None
    assert [i.name for i in by_kind["team"].budget.increases] == ["for-team"]
    assert by_kind["key"].budget is not None
    assert by_kind["key"].budget.increases == [
        BudgetIncrease(name="for-key", nanos=nanos(5), expires_ms=EXPIRES_MS)
    ]
    # The member's cap is its own: an override of the team does not raise it.
    assert by_kind["member"].budget is not None
    assert by_kind["member"].budget.increases == []


def test_a_count_only_scope_is_not_raised() -> None:
    policy = policy_for(api_key("free"), overrides=[raise_("x", "ApiKey", "free")])
    (key_scope,) = policy.scopes
    assert key_scope.budget is not None
    assert key_scope.budget.max_nanos == -1
    assert key_scope.budget.increases == []


def test_the_admit_call_carries_increases_only_where_there_are_some() -> None:
    squad = team("squad", budget={"maxBudget": 100})
    key = api_key("bot", team="squad", budget={"maxBudget": 10})
    policy = policy_for(key, squad, overrides=[raise_("k", "ApiKey", "bot", 2)])
    call = admission_call(policy, RequestEstimate("gpt-4o-mini", 1, 1), "r1", 1000)
    checks = json.loads(call.script_call().spec_json)["checks"]
    team_check, key_check = [check for check in checks if check["kind"] == "budget"]
    assert "increases" not in team_check
    assert key_check["increases"] == [[nanos(2), EXPIRES_MS]]
    assert key_check["max"] == nanos(10)  # raised by the script, against Redis' clock


def test_later_expiry_is_still_one_increase() -> None:
    later = budget_override(
        "k",
        target={"kind": "ApiKey", "name": "bot"},
        increase=1,
        expires=(EXPIRES + timedelta(days=1)).isoformat(),
        reason="extended",
    )
    policy = policy_for(api_key("bot", budget={"maxBudget": 1}), overrides=[later])
    (scope,) = policy.scopes
    assert scope.budget is not None
    assert [i.expires_ms for i in scope.budget.increases] == [EXPIRES_MS + 86_400_000]
