"""Which ApiKeys a change to a Team, Budget or RateLimit affects; pure.

A key depends on its team, on the Budgets and RateLimits it references, and on those its
team references; the global budget affects every key.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Literal

from llmquota.models import ApiKey, Team
from llmquota.models.subject import SubjectSpec

__all__ = [
    "DependencyKind",
    "keys_affected",
    "keys_to_reresolve",
    "referenced_names",
    "subjects_referencing",
    "team_member_users",
]

DependencyKind = Literal["Team", "Budget", "RateLimit"]


def referenced_names(spec: SubjectSpec, kind: Literal["Budget", "RateLimit"]) -> set[str]:
    """Names of the Budgets (or RateLimits) a Team or ApiKey spec references."""
    refs = (
        (spec.budget_ref, spec.end_user_budget_ref)
        if kind == "Budget"
        else (spec.rate_limit_ref, spec.end_user_rate_limit_ref)
    )
    return {ref.name for ref in refs if ref is not None}


def subjects_referencing(
    kind: Literal["Budget", "RateLimit"],
    name: str,
    teams: Iterable[Team],
    keys: Iterable[ApiKey],
) -> int:
    """How many Teams and ApiKeys (of one namespace) reference a Budget or RateLimit."""
    subjects: list[Team | ApiKey] = [*teams, *keys]
    return sum(1 for subject in subjects if name in referenced_names(subject.spec, kind))


def keys_affected(
    kind: DependencyKind,
    name: str,
    teams: Iterable[Team],
    keys: Iterable[ApiKey],
) -> list[ApiKey]:
    """The keys (of one namespace) whose policy may change when `kind/name` changes."""
    if kind == "Team":
        return [key for key in keys if key.spec.team == name]
    via_team = {team.metadata.name for team in teams if name in referenced_names(team.spec, kind)}
    return [
        key for key in keys if name in referenced_names(key.spec, kind) or key.spec.team in via_team
    ]


def keys_to_reresolve(
    affected: Iterable[ApiKey],
    applied: Container[tuple[str, str]],
    in_progress: Container[tuple[str, str]],
) -> list[ApiKey]:
    """Of the keys a change affects, those to resolve again now.

    A key not applied yet in this process resolves itself in its own handler (at a cold
    start every object is "created": doing it here too doubles the work), unless that
    handler is running right now: it may have resolved before this change was in the
    indexes, and would then stay on the stale resolution (a key whose Team arrived
    while its Secret was being generated stayed incomplete until a restart).
    """
    return [
        key
        for key in affected
        if (ref := (key.metadata.namespace, key.metadata.name)) in applied or ref in in_progress
    ]


def team_member_users(team: Team, keys: Iterable[ApiKey]) -> list[str]:
    """The users a Team's status counts: its spec.members and the users of its keys."""
    users = {member.user for member in team.spec.members}
    users.update(
        key.spec.user for key in keys if key.spec.user and key.spec.team == team.metadata.name
    )
    return sorted(users)
