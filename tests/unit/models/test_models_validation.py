"""Every refusal of a manifest names the field at fault, as kubectl users read it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llmquota.models import (
    ApiKey,
    Budget,
    RateLimit,
    SpecValidationError,
    Team,
    check_models_within_team,
    parse_resource,
)


def manifest(kind: str, spec: dict[str, Any], name: str = "thing") -> dict[str, Any]:
    return {
        "apiVersion": "llmquota.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
    }


def refusal(kind: str, spec: dict[str, Any]) -> str:
    """The validation message for a manifest that must be refused."""
    with pytest.raises(ValidationError) as caught:
        parse_resource(manifest(kind, spec))
    return str(caught.value)


@pytest.mark.parametrize(
    ("kind", "spec", "named"),
    [
        ("Budget", {"maxBudget": -1}, "spec.maxBudget"),
        ("Budget", {"maxBudget": 1, "softBudget": -0.5}, "spec.softBudget"),
        ("Budget", {"maxBudget": 1, "modelMaxBudget": {"o1": -2}}, "spec.modelMaxBudget.o1"),
        ("Budget", {}, "spec.maxBudget"),
        ("Team", {"budget": {"maxBudget": -3}}, "spec.budget.maxBudget"),
        ("Team", {"members": [{"user": "a", "maxBudgetInTeam": -1}]}, "maxBudgetInTeam"),
        ("ApiKey", {"budget": {"maxBudget": float("inf")}}, "spec.budget.maxBudget"),
    ],
)  # fmt: skip
def test_negative_or_missing_money_names_the_field(
    kind: str, spec: dict[str, Any], named: str
) -> None:
    assert named in refusal(kind, spec)


def test_soft_budget_above_max_budget_names_both() -> None:
    message = refusal("Budget", {"maxBudget": 1, "softBudget": 2})
    assert "softBudget (2.0) must be less than or equal to maxBudget (1.0)" in message


@pytest.mark.parametrize("duration", ["1y", "2mo", "0s", "1.5h", "monthy", "30", ""])
def test_bad_budget_duration_names_the_field(duration: str) -> None:
    message = refusal("Budget", {"maxBudget": 1, "budgetDuration": duration})
    assert "spec.budgetDuration" in message
    message = refusal("Team", {"budget": {"maxBudget": 1, "budgetDuration": duration}})
    assert "spec.budget.budgetDuration" in message


@pytest.mark.parametrize("kind", ["Team", "ApiKey"])
@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"budget": {"maxBudget": 1}, "budgetRef": {"name": "tier"}}, "budget and budgetRef"),
        ({"rateLimit": {"rpm": 1}, "rateLimitRef": {"name": "std"}}, "rateLimit and rateLimitRef"),
    ],
)
def test_inline_and_reference_are_mutually_exclusive(
    kind: str, spec: dict[str, Any], named: str
) -> None:
    assert f"{named} are mutually exclusive" in refusal(kind, spec)


def test_priority_reservation_needs_dynamic_allocation() -> None:
    message = refusal("RateLimit", {"rpm": 10, "priorityReservation": {"prod": 0.9}})
    assert "priorityReservation is only allowed with allocation: Dynamic" in message
    parse_resource(
        manifest(
            "RateLimit", {"rpm": 10, "allocation": "Dynamic", "priorityReservation": {"prod": 0.9}}
        )
    )


def test_priority_reservation_shares_fit_in_the_pool() -> None:
    spec = {"allocation": "Dynamic", "priorityReservation": {"prod": 0.9, "dev": 0.2}}
    assert "priorityReservation shares add up to 1.1, more than 1" in refusal("RateLimit", spec)
    spec = {"allocation": "Dynamic", "priorityReservation": {"prod": 1.5}}
    assert "spec.priorityReservation.prod" in refusal("RateLimit", spec)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"rpm": -1}, "spec.rpm"),
        ({"tpm": 1.5}, "spec.tpm"),
        ({"maxParallelRequests": -2}, "spec.maxParallelRequests"),
        ({"models": {"gpt-4o": {"rpm": -1}}}, "spec.models.gpt-4o.rpm"),
        ({"allocation": "Greedy"}, "spec.allocation"),
    ],
)
def test_bad_rate_limits_name_the_field(spec: dict[str, Any], named: str) -> None:
    assert named in refusal("RateLimit", spec)


def test_unknown_fields_are_refused_not_ignored() -> None:
    """A typo must not silently mean 'no limit'."""
    assert "spec.maxbudget" in refusal("Budget", {"maxBudget": 1, "maxbudget": 2})
    assert "spec.rateLimit.rmp" in refusal("ApiKey", {"rateLimit": {"rmp": 5}})


def test_team_members_are_unique() -> None:
    spec = {"members": [{"user": "ishaan"}, {"user": "ishaan"}]}
    assert "members: user ishaan is listed more than once" in refusal("Team", spec)


def test_parse_resource_refuses_other_kinds_and_groups() -> None:
    with pytest.raises(ValueError, match="not an llmquota resource"):
        parse_resource({**manifest("Budget", {"maxBudget": 1}), "apiVersion": "other.dev/v1"})
    with pytest.raises(ValueError, match="not an llmquota resource"):
        parse_resource(manifest("Secret", {}))


def test_parse_resource_returns_the_kind_with_snake_case_fields() -> None:
    budget = parse_resource(manifest("Budget", {"maxBudget": 10, "budgetDuration": "30d"}))
    assert isinstance(budget, Budget)
    assert (budget.spec.max_budget, budget.spec.budget_duration) == (10, "30d")
    rate = parse_resource(manifest("RateLimit", {"maxParallelRequests": 3}))
    assert isinstance(rate, RateLimit)
    assert rate.spec.allocation == "Static"
    assert rate.metadata.namespace == "ns"


def key_and_team(key_models: list[str], team_models: list[str]) -> tuple[ApiKey, Team]:
    key = parse_resource(manifest("ApiKey", {"team": "qa", "models": key_models}, "bot"))
    team = parse_resource(manifest("Team", {"models": team_models}, "qa"))
    assert isinstance(key, ApiKey)
    assert isinstance(team, Team)
    return key, team


def test_key_models_outside_the_team_name_spec_models() -> None:
    key, team = key_and_team(["gpt-4o", "llama3", "o1"], ["gpt-4o-mini", "llama3"])
    with pytest.raises(SpecValidationError) as caught:
        check_models_within_team(key.spec, team.spec)
    assert caught.value.field == "spec.models"
    assert caught.value.message == ("gpt-4o, o1 not among team qa's models (gpt-4o-mini, llama3)")
    assert str(caught.value).startswith("spec.models: ")


@pytest.mark.parametrize(
    ("key_models", "team_models"),
    [(["gpt-4o"], []), ([], ["gpt-4o"]), (["llama3"], ["gpt-4o", "llama3"])],
)
def test_key_models_within_the_team_pass(key_models: list[str], team_models: list[str]) -> None:
    key, team = key_and_team(key_models, team_models)
    check_models_within_team(key.spec, team.spec)
