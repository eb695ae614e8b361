"""Which keys a Team, Budget or RateLimit change affects, and subject counts."""

from __future__ import annotations

from typing import Any

from llmquota.models import ApiKey, Team
from llmquota.operator.rules.dependents import (
    keys_affected,
    keys_to_reresolve,
    subjects_referencing,
)


def key(name: str, **spec: Any) -> ApiKey:
    return ApiKey.model_validate(
        {"kind": "ApiKey", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}
    )


def team(name: str, **spec: Any) -> Team:
    return Team.model_validate(
        {"kind": "Team", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}
    )


TEAMS = [team("qa", budgetRef={"name": "tier"}), team("dev", rateLimitRef={"name": "std"})]
KEYS = [
    key("a", team="qa"),
    key("b", budgetRef={"name": "tier"}),
    key("c", team="dev", endUserBudgetRef={"name": "per-user"}),
    key("d"),
]


def names(keys: list[ApiKey]) -> list[str]:
    return [k.metadata.name for k in keys]


def test_team_change_affects_its_keys() -> None:
    assert names(keys_affected("Team", "qa", TEAMS, KEYS)) == ["a"]


def test_budget_change_affects_direct_and_via_team_references() -> None:
    assert names(keys_affected("Budget", "tier", TEAMS, KEYS)) == ["a", "b"]
    assert names(keys_affected("Budget", "per-user", TEAMS, KEYS)) == ["c"]


def test_rate_limit_change_via_team() -> None:
    assert names(keys_affected("RateLimit", "std", TEAMS, KEYS)) == ["c"]
    assert keys_affected("RateLimit", "other", TEAMS, KEYS) == []


def test_subjects_referencing_counts_teams_and_keys() -> None:
    assert subjects_referencing("Budget", "tier", TEAMS, KEYS) == 2
    assert subjects_referencing("RateLimit", "std", TEAMS, KEYS) == 1


def test_a_key_whose_handler_is_running_is_resolved_again() -> None:
    # "a" was applied, "b" is in its own handler right now (it may have resolved before
    # the change reached the indexes), "c" has not been seen by its handler yet.
    affected = [key("a", team="qa"), key("b", team="qa"), key("c", team="qa")]
    chosen = keys_to_reresolve(affected, applied={("ns", "a")}, in_progress={("ns", "b")})
    assert [k.metadata.name for k in chosen] == ["a", "b"]
