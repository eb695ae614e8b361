"""A Team's own budget counters and references, as pure functions.

Keys carry their team's scope inside their resolved policy; the Team's status needs the
same scope (and its members') even when no key exists yet, so it is derived here with
the same helpers the resolver uses.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmquota.models import ApiKey, Team
from llmquota.policy.limits import BudgetLimits
from llmquota.policy.resolve import (
    COUNT_ONLY,
    NamespaceObjects,
    ResolutionError,
    budget_limits,
    increases_for,
    member_scope_id,
    raised,
    team_scope_id,
)

__all__ = [
    "check_team_refs",
    "member_limits",
    "team_budget_limits",
    "team_members",
    "team_scope",
    "team_tag",
]


def team_tag(team: Team) -> str:
    """The hash tag all of a team's counters share (as the resolver cuts it)."""
    return f"{team.metadata.namespace}/{team.metadata.name}"


def _anchor_ms(team: Team) -> int:
    created = team.metadata.creation_timestamp
    return int(created.timestamp() * 1000) if created is not None else 0


def check_team_refs(team: Team, objects: NamespaceObjects) -> None:
    """Raise ResolutionError for the first reference of the team that does not resolve."""
    namespace = team.metadata.namespace
    spec = team.spec
    for field, ref, present, kind in (
        ("spec.budgetRef", spec.budget_ref, objects.budgets, "Budget"),
        ("spec.endUserBudgetRef", spec.end_user_budget_ref, objects.budgets, "Budget"),
        ("spec.rateLimitRef", spec.rate_limit_ref, objects.rate_limits, "RateLimit"),
        (
            "spec.endUserRateLimitRef",
            spec.end_user_rate_limit_ref,
            objects.rate_limits,
            "RateLimit",
        ),
    ):
        if ref is not None and ref.name not in present:
            raise ResolutionError(
                field, f"{kind}NotFound", f"{kind} {ref.name!r} not found in namespace {namespace}"
            )


def team_budget_limits(team: Team, objects: NamespaceObjects) -> BudgetLimits:
    """The team scope's budget (count-only without one); ResolutionError when dangling."""
    check_team_refs(team, objects)
    spec = team.spec.budget
    if team.spec.budget_ref is not None:
        spec = objects.budgets[team.spec.budget_ref.name].spec
    if spec is None:
        return COUNT_ONLY
    increases = increases_for("Team", team.metadata.name, objects.overrides)
    return raised(budget_limits(spec, _anchor_ms(team)), increases)


def member_limits(team_limits: BudgetLimits) -> BudgetLimits:
    """A member's counter for status: the team's window, counted only."""
    return BudgetLimits(
        max_nanos=COUNT_ONLY.max_nanos, window=team_limits.window, anchor_ms=team_limits.anchor_ms
    )


def team_members(team: Team, keys: Iterable[ApiKey]) -> list[tuple[str, str]]:
    """(user, member scope id) of spec.members and of the users of the team's keys."""
    users = {member.user for member in team.spec.members}
    users.update(
        key.spec.user for key in keys if key.spec.user and key.spec.team == team.metadata.name
    )
    namespace, name = team.metadata.namespace, team.metadata.name
    return [(user, member_scope_id(namespace, name, user)) for user in sorted(users)]


def team_scope(team: Team) -> tuple[str, str]:
    """(tag, scope id) of the team's own budget counter."""
    return team_tag(team), team_scope_id(team.metadata.namespace, team.metadata.name)
