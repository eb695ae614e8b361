"""A request and its policy become the admit script's KEYS and checks, in scope order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.integration.store.scenario import api_key, budget, policy_for, rate_limit, team

from llmquota.policy import keyspace
from llmquota.policy.admission import (
    KEY_SHARE,
    MAX_AMOUNT,
    AdmissionCall,
    RequestEstimate,
    admission_call,
    counter_amount,
    dynamic_group,
    scopes_for,
)
from llmquota.policy.limits import RateLimits, nanos


def spec_of(call: AdmissionCall) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(call.script_call().spec_json)
    return spec


def checks_of(call: AdmissionCall) -> list[dict[str, Any]]:
    return list(spec_of(call)["checks"])


def full_policy() -> Any:
    everything = budget("everything", maxBudget=1000)
    per_customer = budget("per-customer", maxBudget=1, budgetDuration="1d")
    qa = team(
        "qa",
        budget={"maxBudget": 100, "modelMaxBudget": {"gpt-4o": 5}},
        rateLimit={"rpm": 60, "maxParallelRequests": 4, "models": {"gpt-4o": {"tpm": 100}}},
        members=[{"user": "ishaan", "maxBudgetInTeam": 2}],
        endUserBudgetRef={"name": "per-customer"},
    )
    key = api_key("bot", team="qa", user="ishaan", budget={"maxBudget": 10})
    return policy_for(key, qa, budgets=[per_customer], global_budget=everything)


def test_checks_follow_the_scope_order() -> None:
    policy = full_policy()
    call = admission_call(policy, RequestEstimate("gpt-4o", nanos(0.02), 300, "cust-1"), "r1", 900)
    checks = checks_of(call)
    assert [(check["scope"], check["kind"]) for check in checks] == [
        (0, "budget"),  # global
        (1, "budget"), (1, "rate"), (1, "parallel"),  # team: budget, rates, in flight
        (2, "budget"),  # member
        (3, "budget"),  # key
        (4, "budget"),  # end user cust-1 of team qa
    ]  # fmt: skip
    assert [scope.kind for scope in call.scopes] == ["global", "team", "member", "key", "end_user"]
    assert call.scopes[4].label == "end user cust-1 of team qa"
    assert call.scopes[4].id == "team/quota/qa/user/cust-1"


def test_check_fields_carry_limits_in_script_units() -> None:
    policy = full_policy()
    call = admission_call(policy, RequestEstimate("gpt-4o", nanos(0.02), 300), "r1", 900)
    spec = spec_of(call)
    assert (spec["lease_ms"], spec["model"], spec["cost"], spec["tokens"]) == (
        900, "gpt-4o", 20_000_000, 300
    )  # fmt: skip
    team_budget, team_rate, team_parallel = spec["checks"][1:4]
    assert (team_budget["max"], team_budget["model_max"], team_budget["window"]) == (
        nanos(100),
        nanos(5),
        "none",
    )
    rates = ("rpm", "tpm", "model_rpm", "model_tpm")
    assert tuple(team_rate[name] for name in rates) == (
        60,
        -1,
        -1,
        100,
    )
    assert (team_parallel["max"], team_parallel["model_max"]) == (4, -1)
    other_model = spec_of(admission_call(policy, RequestEstimate("llama3", 1, 1), "r2", 900))
    assert other_model["checks"][1]["model_max"] == -1
    assert other_model["checks"][2]["model_tpm"] == -1


def test_keys_are_numbered_once_each_and_built_by_the_keyspace() -> None:
    policy = full_policy()
    call = admission_call(policy, RequestEstimate("gpt-4o", 1, 1), "r1", 900)
    script_call = call.script_call()
    keys = script_call.keys
    assert len(keys) == len(set(keys))
    checks = checks_of(call)
    team_scope = call.scopes[1]

    def counter(check: dict[str, Any]) -> str:
        return str(keys[check["counter"] + 1])  # KEYS[1], KEYS[2]: leases zset, lease record

    assert counter(checks[1]) == keyspace.budget_key(team_scope.tag, team_scope.id)
    assert counter(checks[2]) == keyspace.rate_key(team_scope.tag, team_scope.id)
    assert counter(checks[3]) == keyspace.parallel_key(team_scope.tag, team_scope.id)
    assert counter(checks[1]) == "llmquota:{quota/qa}:budget:team/quota/qa"


def test_the_lease_lives_under_the_keys_own_hash_tag() -> None:
    """The leases zset and the lease record come first in KEYS, under the tag of the key's
    team: what a sweep of that tag finds beside the counters."""
    call = admission_call(full_policy(), RequestEstimate("gpt-4o", 1, 1), "r1", 900)
    script_call = call.script_call()
    assert script_call.tag == "quota/qa"
    assert script_call.keys[:2] == ["llmquota:{quota/qa}:leases", "llmquota:{quota/qa}:lease:r1"]


def test_no_end_user_no_end_user_scope() -> None:
    policy = full_policy()
    assert [scope.kind for scope in scopes_for(policy, None)] == [
        "global", "team", "member", "key"
    ]  # fmt: skip


def test_dynamic_pool_check_follows_the_rate_check() -> None:
    pool = rate_limit("pool", rpm=10, allocation="Dynamic", priorityReservation={"prod": 0.9})
    qa = team("qa", rateLimitRef={"name": "pool"})
    policy = policy_for(api_key("bot", team="qa", priority="prod"), qa, rate_limits=[pool])
    checks = checks_of(admission_call(policy, RequestEstimate("m", 1, 1), "r", 1))
    dynamic = checks[2]
    assert [check["kind"] for check in checks] == ["budget", "rate", "pool", "budget"]
    assert (dynamic["group"], dynamic["weight"], dynamic["member"]) == (
        "prod",
        0.9,
        policy.key_hash,
    )


@pytest.mark.parametrize(
    ("reservation", "priority", "expected"),
    [
        ({}, "prod", ("_all", 1.0)),
        ({"prod": 0.9, "dev": 0.1}, "prod", ("prod", 0.9)),
        ({"prod": 0.9, "dev": 0.1}, "dev", ("dev", 0.1)),
        ({"prod": 0.6}, None, ("_default", pytest.approx(0.4))),
        ({"prod": 0.6, "dev": 0.4}, "batch", ("_default", 0.0)),
    ],
)
def test_dynamic_group_by_priority(
    reservation: dict[str, float], priority: str | None, expected: tuple[str, float]
) -> None:
    rate = RateLimits(rpm=10, dynamic=True, priority_reservation=reservation)
    assert dynamic_group(rate, priority) == expected


def test_every_budget_but_the_keys_own_is_shared() -> None:
    policy = full_policy()
    call = admission_call(policy, RequestEstimate("gpt-4o", nanos(0.02), 300, "cust-1"), "r1", 900)
    spec = spec_of(call)
    shared = [
        (check["scope"], check["shared"]) for check in spec["checks"] if check["kind"] == "budget"
    ]
    assert shared == [(0, True), (1, True), (2, True), (3, False), (4, True)]
    assert (spec["key_field"], spec["key_share"]) == (f"k:{policy.key_hash}", KEY_SHARE)


def test_amounts_are_held_to_what_a_redis_counter_takes() -> None:
    """A batch /v1/completions with n=128 and max_tokens=1e7 reserved more than 1e17 nano-USD."""
    huge = RequestEstimate("gpt-4o", 10**20, 10**18)
    spec = spec_of(admission_call(full_policy(), huge, "r1", 900))
    assert (spec["cost"], spec["tokens"]) == (MAX_AMOUNT, MAX_AMOUNT)
    assert counter_amount(-3) == 0
