"""Specs to resolved policies: references followed, scopes cut in order, dangling
references refused with a reason the operator can show."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests.integration.store.scenario import (
    CREATED,
    api_key,
    budget,
    epoch_ms,
    policy_for,
    rate_limit,
    team,
)

from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import BudgetLimits, LimitSet, RateLimits, nanos
from llmquota.policy.resolve import NamespaceObjects, ResolutionError, resolve_key_policy
from llmquota.policy.resolve import rate_limits as rate_limits_of

TEAM_CREATED = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


def test_references_resolve_to_the_referenced_specs() -> None:
    tier = budget("tier", maxBudget=10, softBudget=8, budgetDuration="30d",
                  modelMaxBudget={"gpt-4o": 5})  # fmt: skip
    standard = rate_limit("standard", rpm=60, tpm=1000, models={"gpt-4o": {"rpm": 2}})
    qa = team("qa", created=TEAM_CREATED, budgetRef={"name": "tier"},
              rateLimitRef={"name": "standard"})  # fmt: skip
    policy = policy_for(api_key("bot", team="qa"), qa, budgets=[tier], rate_limits=[standard])

    [team_scope, key_scope] = policy.scopes
    assert team_scope.budget == BudgetLimits(
        max_nanos=nanos(10),
        soft_nanos=nanos(8),
        window=f"fixed:{30 * 86_400_000}",
        anchor_ms=epoch_ms(TEAM_CREATED),
        model_max_nanos={"gpt-4o": nanos(5)},
    )
    assert team_scope.rate == RateLimits(rpm=60, tpm=1000, models={"gpt-4o": LimitSet(rpm=2)})
    assert key_scope.budget == BudgetLimits(max_nanos=-1)  # counted, never refused
    assert key_scope.rate is None


def test_scopes_come_in_order_global_team_member_key() -> None:
    everything = budget("everything", maxBudget=1000, budgetDuration="monthly")
    qa = team("qa", budget={"maxBudget": 100, "budgetDuration": "1h"},
              members=[{"user": "ishaan", "maxBudgetInTeam": 0.5}])  # fmt: skip
    key = api_key("bot", team="qa", user="ishaan", budget={"maxBudget": 1})
    policy = policy_for(key, qa, global_budget=everything)

    assert [(scope.kind, scope.id, scope.label) for scope in policy.scopes] == [
        ("global", "global/quota/everything", "the global budget"),
        ("team", "team/quota/qa", "team qa"),
        ("member", "member/quota/qa/ishaan", "member ishaan of team qa"),
        ("key", "key/quota/bot", "key bot"),
    ]
    member = policy.scopes[2]
    assert member.budget == BudgetLimits(
        max_nanos=nanos(0.5), window="fixed:3600000", anchor_ms=epoch_ms(CREATED)
    )  # the member's cap lives in the team's window
    assert {scope.tag for scope in policy.scopes[1:]} == {"quota/qa"}  # one team, one slot
    assert policy.scopes[0].tag == "global"


def test_a_member_without_a_cap_is_counted_only() -> None:
    qa = team("qa", budget={"maxBudget": 100, "budgetDuration": "monthly"})
    policy = policy_for(api_key("bot", team="qa", user="newcomer"), qa)
    member = policy.scopes[1]
    assert (member.kind, member.budget) == (
        "member",
        BudgetLimits(max_nanos=-1, window="monthly", anchor_ms=epoch_ms(CREATED)),
    )


def test_key_fields_and_models_inherited_from_the_team() -> None:
    qa = team("qa", models=["gpt-4o-mini", "llama3"])
    expires = datetime(2027, 1, 1, tzinfo=UTC)
    key = api_key("bot", team="qa", priority="prod", blocked=True, expires=expires.isoformat())
    policy = policy_for(key, qa)
    assert policy.models == ["gpt-4o-mini", "llama3"]
    assert (policy.priority, policy.blocked, policy.expires_at) == ("prod", True, expires)
    assert (policy.namespace, policy.key_name, policy.team) == ("quota", "bot", "qa")
    assert policy.key_hash == hash_key("sk-bot")
    assert policy_for(api_key("own", team="qa", models=["llama3"]), qa).models == ["llama3"]


def test_a_key_without_team_has_its_own_tag() -> None:
    policy = policy_for(api_key("loner", budget={"maxBudget": 1}))
    [key_scope] = policy.scopes
    assert (key_scope.kind, key_scope.tag) == ("key", "quota/key/loner")
    assert policy.team is None


def test_end_user_templates_from_team_and_key() -> None:
    per_customer = budget("per-customer", maxBudget=0.5, budgetDuration="1d")
    per_customer_rl = rate_limit("per-customer-rl", rpm=5)
    qa = team("qa", endUserBudgetRef={"name": "per-customer"})
    key = api_key("bot", team="qa", endUserRateLimitRef={"name": "per-customer-rl"})
    policy = policy_for(key, qa, budgets=[per_customer], rate_limits=[per_customer_rl])
    [from_team, from_key] = policy.end_users
    assert (from_team.owner_label, from_team.budget is not None, from_team.rate) == (
        "team qa",
        True,
        None,
    )
    assert (from_key.owner_label, from_key.budget, from_key.rate) == (
        "key bot",
        None,
        RateLimits(rpm=5),
    )


@pytest.mark.parametrize(
    ("spec", "field", "reason", "text"),
    [
        ({"budgetRef": {"name": "gone"}}, "spec.budgetRef", "BudgetNotFound", "Budget 'gone'"),
        ({"rateLimitRef": {"name": "gone"}}, "spec.rateLimitRef", "RateLimitNotFound",
         "RateLimit 'gone'"),
        ({"endUserBudgetRef": {"name": "gone"}}, "spec.endUserBudgetRef", "BudgetNotFound",
         "Budget 'gone'"),
        ({"endUserRateLimitRef": {"name": "gone"}}, "spec.endUserRateLimitRef",
         "RateLimitNotFound", "RateLimit 'gone'"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("on_team", [False, True])
def test_dangling_references_name_field_and_reason(
    spec: dict[str, Any], field: str, reason: str, text: str, on_team: bool
) -> None:
    key, owner = (
        (api_key("bot", team="qa"), team("qa", **spec))
        if on_team
        else (api_key("bot", **spec), None)
    )
    with pytest.raises(ResolutionError) as caught:
        policy_for(key, owner)
    assert (caught.value.field, caught.value.reason) == (field, reason)
    assert caught.value.message == f"{text} not found in namespace quota"


def test_a_missing_team_is_a_resolution_error() -> None:
    key = api_key("bot", team="ghost")
    with pytest.raises(ResolutionError) as caught:
        resolve_key_policy(key, "hash", None, NamespaceObjects({}, {}))
    assert (caught.value.field, caught.value.reason) == ("spec.team", "TeamNotFound")
    assert "Team 'ghost' not found in namespace quota" in str(caught.value)


def test_key_models_outside_the_team_are_a_resolution_error() -> None:
    qa = team("qa", models=["gpt-4o-mini"])
    with pytest.raises(ResolutionError) as caught:
        policy_for(api_key("bot", team="qa", models=["gpt-4o"]), qa)
    assert (caught.value.field, caught.value.reason) == ("spec.models", "ModelsOutsideTeam")
    assert "gpt-4o not among team qa's models (gpt-4o-mini)" in caught.value.message


def test_a_referenced_dynamic_rate_limit_is_one_pool_for_all_its_keys() -> None:
    pool = rate_limit("shared", rpm=10, allocation="Dynamic", priorityReservation={"prod": 0.9})
    red, blue = team("red"), team("blue")
    spec: dict[str, Any] = {"rateLimitRef": {"name": "shared"}}
    policies = [
        policy_for(api_key("a", team="red", **spec), red, rate_limits=[pool]),
        policy_for(api_key("b", team="blue", **spec), blue, rate_limits=[pool]),
        policy_for(api_key("c", **spec), rate_limits=[pool]),
    ]
    pools = [policy.scopes[-1] for policy in policies]
    assert {(scope.kind, scope.id, scope.tag) for scope in pools} == {
        ("pool", "ratelimit/quota/shared", "quota/ratelimit/shared")
    }
    assert pools[0].label == "key a (Dynamic RateLimit shared)"
    assert pools[0].rate == rate_limits_of(pool.spec)
    # team a, key a, team b, key b, key c: none counts the limit on its own
    assert [scope.rate for policy in policies for scope in policy.scopes[:-1]] == [None] * 5


def test_a_pool_the_team_and_its_key_both_reference_is_counted_once() -> None:
    pool = rate_limit("shared", rpm=10, allocation="Dynamic")
    qa = team("qa", rateLimitRef={"name": "shared"})
    key = api_key("bot", team="qa", rateLimitRef={"name": "shared"})
    policy = policy_for(key, qa, rate_limits=[pool])
    assert [(scope.kind, scope.label) for scope in policy.scopes] == [
        ("team", "team qa"),
        ("pool", "team qa (Dynamic RateLimit shared)"),
        ("key", "key bot"),
    ]


def test_a_referenced_static_rate_limit_stays_each_subjects_own() -> None:
    standard = rate_limit("standard", rpm=60)
    spec: dict[str, Any] = {"rateLimitRef": {"name": "standard"}}
    first = policy_for(api_key("a", **spec), rate_limits=[standard])
    second = policy_for(api_key("b", **spec), rate_limits=[standard])
    assert [scope.kind for scope in first.scopes] == ["key"]
    assert first.scopes[0].rate == second.scopes[0].rate == RateLimits(rpm=60)
    assert first.scopes[0].id != second.scopes[0].id
