"""Admission plans are reused across requests: never for another policy object, model or
end user, never past a calendar window's boundary, and bounded in number."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.integration.store.scenario import api_key, budget, epoch_ms, policy_for, team

from llmquota.durations import calendar_bounds, window_spec
from llmquota.policy.admission import (
    MAX_PLANS,
    AdmissionCall,
    RequestEstimate,
    admission_call,
    admission_plan,
)
from llmquota.policy.limits import ResolvedPolicy, nanos


def spec_of(call: AdmissionCall, now_ms: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(call.script_call(now_ms).spec_json)
    return spec


def key_with_budget(max_usd: float) -> ResolvedPolicy:
    return policy_for(
        api_key("bot", budget={"maxBudget": max_usd, "modelMaxBudget": {"gpt-4o": 1}})
    )


def call_for(
    policy: ResolvedPolicy, model: str = "gpt-4o", end_user: str | None = None
) -> AdmissionCall:
    return admission_call(policy, RequestEstimate(model, 1, 1, end_user), uuid.uuid4().hex, 900)


def test_a_replaced_policy_never_gets_its_predecessors_plan() -> None:
    """The policy cache swaps in a new object for the same key hash on every change; a
    plan keyed on the hash would serve the old limits."""
    first, second = key_with_budget(1), key_with_budget(2)
    assert first.key_hash == second.key_hash
    assert spec_of(call_for(first))["checks"][0]["max"] == nanos(1)
    assert spec_of(call_for(second))["checks"][0]["max"] == nanos(2)
    assert spec_of(call_for(first))["checks"][0]["max"] == nanos(1)


def test_a_dropped_policys_identity_taken_by_another_never_gets_its_plan() -> None:
    """A policy dropped from the cache frees its identity, which CPython hands to the
    next object of its size: a plan keyed on identity alone would serve that one the
    dropped policy's checks (here its key's field)."""
    for number in range(50):
        policy = ResolvedPolicy(key_hash=f"hash-{number}", namespace="quota", key_name="bot")
        assert spec_of(call_for(policy))["key_field"] == f"k:hash-{number}"
        del policy  # its identity is free for the next one


def test_each_model_gets_its_own_caps() -> None:
    policy = key_with_budget(10)
    for model, model_max in [("gpt-4o", nanos(1)), ("llama3", -1), ("gpt-4o", nanos(1))]:
        spec = spec_of(call_for(policy, model))
        assert (spec["model"], spec["checks"][0]["model_max"]) == (model, model_max)


def test_each_end_user_gets_their_own_scope_and_counter() -> None:
    policy = policy_for(
        api_key("bot", team="qa"),
        team("qa", endUserBudgetRef={"name": "per-customer"}),
        budgets=[budget("per-customer", maxBudget=1)],
    )
    for end_user in ["cust-1", "cust-2", "cust-1", None]:
        call = call_for(policy, end_user=end_user)
        users = [scope for scope in call.scopes if scope.kind == "end_user"]
        counters = [key for key in call.script_call().keys if "/user/" in key]
        if end_user is None:
            assert (users, counters) == ([], [])
        else:
            assert [scope.label for scope in users] == [f"end user {end_user} of team qa"]
            assert counters == [f"llmquota:{{quota/qa}}:budget:team/quota/qa/user/{end_user}"]


def test_calendar_bounds_follow_the_clock_across_a_boundary() -> None:
    """A daily window in Berlin: the bounds handed to the script are those around the
    clock of each call, on one Redis and per slot of a Cluster, forward and back."""
    policy = policy_for(
        api_key(
            "bot",
            budget={"maxBudget": 1, "budgetDuration": "daily", "timeZone": "Europe/Berlin"},
        )
    )
    midnight = epoch_ms(datetime(2026, 3, 4, 23, 0, tzinfo=UTC))  # 00:00 in Berlin
    window = window_spec(policy.scopes[0].budget.window)  # type: ignore[union-attr]
    for now_ms in [midnight - 1, midnight, midnight + 1, midnight - 1, midnight + 86_400_000]:
        call = call_for(policy)
        [check] = spec_of(call, now_ms)["checks"]
        [slot] = call.slot_calls(now_ms)
        assert check["bounds"] == calendar_bounds(window, now_ms)
        assert json.loads(slot.spec_json)["checks"][0]["bounds"] == check["bounds"]


def test_each_request_brings_its_own_amounts_lease_and_id() -> None:
    policy = key_with_budget(10)
    one = admission_call(policy, RequestEstimate("gpt-4o", 5, 7), "r1", 900)
    two = admission_call(policy, RequestEstimate("gpt-4o", 11, 13), "r2", 1200)
    first, second = spec_of(one), spec_of(two)
    assert (first["cost"], first["tokens"], first["lease_ms"]) == (5, 7, 900)
    assert (second["cost"], second["tokens"], second["lease_ms"]) == (11, 13, 1200)
    assert first["checks"] == second["checks"]
    assert one.script_call().keys[1].endswith(":lease:r1")
    assert two.script_call().keys[1].endswith(":lease:r2")
    assert one.script_call().keys[2:] == two.script_call().keys[2:]


def test_plans_are_bounded_the_oldest_dropped_first() -> None:
    """End users come from request bodies: a client naming a new one each time must not
    grow the plans without bound."""
    policy = key_with_budget(10)
    oldest = admission_plan(policy, "gpt-4o", "user-0")
    assert admission_plan(policy, "gpt-4o", "user-0") is oldest
    for number in range(1, MAX_PLANS + 1):
        admission_plan(policy, "gpt-4o", f"user-{number}")
    assert admission_plan(policy, "gpt-4o", "user-0") is not oldest
