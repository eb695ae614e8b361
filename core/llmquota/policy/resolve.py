"""Specs to resolved policies: follow references, intersect models, cut scopes.

Pure: the caller (operator or standalone loader) looks the objects up and hands them in;
what cannot be resolved is a `ResolutionError` naming the field, which the operator
turns into a condition and an Event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from llmquota.durations import parse_duration
from llmquota.models import (
    ApiKey,
    Budget,
    BudgetOverride,
    BudgetSpec,
    ObjectRef,
    RateLimit,
    RateLimitSpec,
    SpecValidationError,
    Team,
    check_models_within_team,
)
from llmquota.models.budgetoverride import OverrideTargetKind
from llmquota.models.subject import SubjectSpec
from llmquota.policy.identity import WorkloadPolicy
from llmquota.policy.limits import (
    BudgetIncrease,
    BudgetLimits,
    EndUserTemplate,
    LimitSet,
    RateLimits,
    ResolvedPolicy,
    Scope,
    ScopeKind,
    WindowLimits,
    nanos,
)

__all__ = [
    "COUNT_ONLY",
    "NamespaceObjects",
    "ResolutionError",
    "ResolvedTeam",
    "budget_limits",
    "increases_for",
    "key_scope_id",
    "member_scope",
    "member_scope_id",
    "pool_scope_id",
    "raised",
    "rate_limits",
    "resolve_key_policy",
    "resolve_team",
    "resolve_workload_policy",
    "team_scope_id",
]


COUNT_ONLY = BudgetLimits(max_nanos=-1)
"""The counter of a subject without a budget: spend is counted (for status), never refused."""


ReferencedT = TypeVar("ReferencedT", Budget, RateLimit)


class ResolutionError(ValueError):
    """A reference or rule across resources that does not hold; names field and reason."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class NamespaceObjects:
    """The objects of one namespace that a key's policy depends on: the Budgets and
    RateLimits its references resolve to, by name, and the BudgetOverrides that raise
    its own or its team's budget."""

    budgets: Mapping[str, Budget]
    rate_limits: Mapping[str, RateLimit]
    overrides: Sequence[BudgetOverride] = ()


def increases_for(
    kind: OverrideTargetKind, name: str, overrides: Sequence[BudgetOverride]
) -> list[BudgetIncrease]:
    """The increases the overrides grant to one ApiKey or Team, in name order.

    Expired ones are kept: the admit script ignores an increase from its `expires` on,
    by Redis' clock, so the end of an override never waits for the operator.
    """
    return [
        BudgetIncrease(
            name=override.metadata.name,
            nanos=nanos(override.spec.increase),
            expires_ms=int(override.spec.expires.timestamp() * 1000),
        )
        for override in sorted(overrides, key=lambda o: o.metadata.name)
        if override.spec.target.kind == kind and override.spec.target.name == name
    ]


def raised(limits: BudgetLimits, increases: list[BudgetIncrease]) -> BudgetLimits:
    """`limits` with the increases on it; a count-only budget is not raised."""
    if not increases or limits.max_nanos < 0:
        return limits
    return limits.model_copy(update={"increases": increases})


def _raised(scope: Scope, increases: list[BudgetIncrease]) -> Scope:
    if scope.budget is None:
        return scope
    return scope.model_copy(update={"budget": raised(scope.budget, increases)})


def team_scope_id(namespace: str, team: str) -> str:
    """A team's identity in counters and statuses."""
    return f"team/{namespace}/{team}"


def key_scope_id(namespace: str, key_name: str) -> str:
    """An ApiKey's identity in counters and statuses."""
    return f"key/{namespace}/{key_name}"


def pool_scope_id(namespace: str, rate_limit: str) -> str:
    """A referenced Dynamic RateLimit's identity in counters: one pool per object."""
    return f"ratelimit/{namespace}/{rate_limit}"


def _anchor_ms(created: datetime | None) -> int:
    return int(created.timestamp() * 1000) if created is not None else 0


def budget_limits(spec: BudgetSpec, anchor_ms: int) -> BudgetLimits:
    """A Budget spec in the units and form the scripts use."""
    zone = spec.time_zone
    return BudgetLimits(
        max_nanos=nanos(spec.max_budget),
        soft_nanos=None if spec.soft_budget is None else nanos(spec.soft_budget),
        window=parse_duration(spec.budget_duration, zone).wire,
        anchor_ms=anchor_ms,
        model_max_nanos={model: nanos(cap) for model, cap in spec.model_max_budget.items()},
        windows=[
            WindowLimits(
                max_nanos=nanos(window.max_budget),
                window=parse_duration(window.budget_duration, zone).wire,
            )
            for window in spec.windows
        ],
        fail_open=spec.failure_policy == "Open",
        audit=spec.enforcement == "Audit",
    )


def rate_limits(spec: RateLimitSpec) -> RateLimits:
    """A RateLimit spec in the form the scripts use."""
    return RateLimits(
        rpm=spec.rpm,
        tpm=spec.tpm,
        max_parallel=spec.max_parallel_requests,
        models={
            model: LimitSet(rpm=limit.rpm, tpm=limit.tpm, max_parallel=limit.max_parallel_requests)
            for model, limit in spec.models.items()
        },
        dynamic=spec.allocation == "Dynamic",
        priority_reservation=dict(spec.priority_reservation),
        fail_open=spec.failure_policy == "Open",
        audit=spec.enforcement == "Audit",
    )


def _referenced(
    kind: str, ref: ObjectRef, field: str, namespace: str, found: Mapping[str, ReferencedT]
) -> ReferencedT:
    """The Budget or RateLimit that `ref` names, or a ResolutionError naming `field`."""
    referenced = found.get(ref.name)
    if referenced is None:
        raise ResolutionError(
            field, f"{kind}NotFound", f"{kind} {ref.name!r} not found in namespace {namespace}"
        )
    return referenced


def _subject_budget(
    spec: SubjectSpec, namespace: str, objects: NamespaceObjects
) -> BudgetSpec | None:
    if spec.budget_ref is not None:
        ref = spec.budget_ref
        return _referenced("Budget", ref, "spec.budgetRef", namespace, objects.budgets).spec
    return spec.budget


def _pool_scope(rate_limit: RateLimit, subject_label: str) -> Scope:
    """The counters of a Dynamic RateLimit, shared by every Team and ApiKey referencing it
    (whatever their teams, so under a hash tag of its own); named after the subject that
    drew on it, so that a refusal says whose share ran out."""
    namespace, name = rate_limit.metadata.namespace, rate_limit.metadata.name
    return Scope(
        kind="pool",
        id=pool_scope_id(namespace, name),
        tag=f"{namespace}/ratelimit/{name}",
        label=f"{subject_label} (Dynamic RateLimit {name})",
        rate=rate_limits(rate_limit.spec),
    )


def _subject_scopes(
    kind: ScopeKind,
    *,
    scope_id: str,
    tag: str,
    label: str,
    spec: SubjectSpec,
    anchor_ms: int,
    namespace: str,
    objects: NamespaceObjects,
) -> list[Scope]:
    """The subject's own scope, followed by the pool scope of a referenced Dynamic
    RateLimit: that pool is one per RateLimit object, not one per subject."""
    budget = _subject_budget(spec, namespace, objects)
    rate = spec.rate_limit
    pools: list[Scope] = []
    if spec.rate_limit_ref is not None:
        found = objects.rate_limits
        referenced = _referenced(
            "RateLimit", spec.rate_limit_ref, "spec.rateLimitRef", namespace, found
        )
        if referenced.spec.allocation == "Dynamic":
            pools.append(_pool_scope(referenced, label))
        else:
            rate = referenced.spec
    own = Scope(
        kind=kind,
        id=scope_id,
        tag=tag,
        label=label,
        budget=COUNT_ONLY if budget is None else budget_limits(budget, anchor_ms),
        rate=None if rate is None else rate_limits(rate),
    )
    return [own, *pools]


def _end_user_template(
    spec: SubjectSpec,
    owner: Scope,
    anchor_ms: int,
    namespace: str,
    objects: NamespaceObjects,
) -> EndUserTemplate | None:
    if spec.end_user_budget_ref is None and spec.end_user_rate_limit_ref is None:
        return None
    budget = (
        None
        if spec.end_user_budget_ref is None
        else _referenced(
            "Budget", spec.end_user_budget_ref, "spec.endUserBudgetRef", namespace, objects.budgets
        ).spec
    )
    rate = (
        None
        if spec.end_user_rate_limit_ref is None
        else _referenced(
            "RateLimit",
            spec.end_user_rate_limit_ref,
            "spec.endUserRateLimitRef",
            namespace,
            objects.rate_limits,
        ).spec
    )
    return EndUserTemplate(
        owner_id=owner.id,
        owner_label=owner.label,
        tag=owner.tag,
        budget=None if budget is None else budget_limits(budget, anchor_ms),
        rate=None if rate is None else rate_limits(rate),
    )


def member_scope_id(namespace: str, team: str, user: str) -> str:
    """A team member's identity in counters and statuses."""
    return f"member/{namespace}/{team}/{user}"


def member_scope(user: str, team: Team, team_scope: Scope) -> Scope:
    """The member's counter in the team's window, capped by maxBudgetInTeam if set."""
    member = next((m for m in team.spec.members if m.user == user), None)
    cap = None if member is None else member.max_budget_in_team
    team_budget = team_scope.budget or COUNT_ONLY
    return Scope(
        kind="member",
        id=member_scope_id(team.metadata.namespace, team.metadata.name, user),
        tag=team_scope.tag,
        label=f"member {user} of team {team.metadata.name}",
        budget=BudgetLimits(
            max_nanos=COUNT_ONLY.max_nanos if cap is None else nanos(cap),
            window=team_budget.window,
            anchor_ms=team_budget.anchor_ms,
            fail_open=team_budget.fail_open,
        ),
    )


@dataclass(frozen=True)
class ResolvedTeam:
    """What a Team contributes to each of its keys' policies; its own status counts the
    same `scope` (one builder, so a Team's status and its keys' admission agree)."""

    scope: Scope
    """The team's own counter: tag, id, window anchor, raised by its BudgetOverrides."""
    pools: list[Scope]
    """The pool of a Dynamic RateLimit the team references."""
    end_users: EndUserTemplate | None


def resolve_team(team: Team, objects: NamespaceObjects) -> ResolvedTeam:
    """The team's scopes; raises ResolutionError naming a reference that does not resolve."""
    namespace = team.metadata.namespace
    anchor_ms = _anchor_ms(team.metadata.creation_timestamp)
    own, *pools = _subject_scopes(
        "team",
        scope_id=team_scope_id(namespace, team.metadata.name),
        tag=f"{namespace}/{team.metadata.name}",
        label=f"team {team.metadata.name}",
        spec=team.spec,
        anchor_ms=anchor_ms,
        namespace=namespace,
        objects=objects,
    )
    end_users = _end_user_template(team.spec, own, anchor_ms, namespace, objects)
    increases = increases_for("Team", team.metadata.name, objects.overrides)
    return ResolvedTeam(scope=_raised(own, increases), pools=pools, end_users=end_users)


def _global_scopes(global_budget: Budget | None) -> list[Scope]:
    """The global budget's scope, when there is one: every request counts against it."""
    if global_budget is None:
        return []
    meta = global_budget.metadata
    return [
        Scope(
            kind="global",
            id=f"global/{meta.namespace}/{meta.name}",
            tag="global",
            label="the global budget",
            budget=budget_limits(global_budget.spec, _anchor_ms(meta.creation_timestamp)),
        )
    ]


def resolve_workload_policy(
    team: Team, objects: NamespaceObjects, global_budget: Budget | None = None
) -> WorkloadPolicy | None:
    """What keyless requests of the workloads a Team selects are checked against; None
    when the Team selects none. Raises ResolutionError naming what is wrong.

    The team's scopes as a key of the team gets them, without a key or member; each
    workload's own counter (see `identity.workload_policy_for`) has the
    workloadBudgetRef's limits, cut from the Team's creation.
    """
    if team.spec.workload_selector is None:
        return None
    namespace = team.metadata.namespace
    resolved_team = resolve_team(team, objects)
    workload_budget = COUNT_ONLY
    if team.spec.workload_budget_ref is not None:
        referenced = _referenced(
            "Budget",
            team.spec.workload_budget_ref,
            "spec.workloadBudgetRef",
            namespace,
            objects.budgets,
        )
        workload_budget = budget_limits(
            referenced.spec, _anchor_ms(team.metadata.creation_timestamp)
        )
    return WorkloadPolicy(
        namespace=namespace,
        team=team.metadata.name,
        selector=team.spec.workload_selector,
        team_policy=ResolvedPolicy(
            key_hash="",
            namespace=namespace,
            key_name="",
            team=team.metadata.name,
            models=list(team.spec.models),
            scopes=[*_global_scopes(global_budget), resolved_team.scope, *resolved_team.pools],
            end_users=[] if resolved_team.end_users is None else [resolved_team.end_users],
        ),
        workload_budget=workload_budget,
    )


def resolve_key_policy(
    key: ApiKey,
    key_hash: str,
    team: Team | None,
    objects: NamespaceObjects,
    global_budget: Budget | None = None,
) -> ResolvedPolicy:
    """Everything that applies to `key`; raises ResolutionError naming what is wrong."""
    namespace = key.metadata.namespace
    if key.spec.team is not None and team is None:
        raise ResolutionError(
            "spec.team",
            "TeamNotFound",
            f"Team {key.spec.team!r} not found in namespace {namespace}",
        )
    scopes: list[Scope] = _global_scopes(global_budget)
    end_users: list[EndUserTemplate] = []
    models = list(key.spec.models)
    key_tag = f"{namespace}/key/{key.metadata.name}"
    if team is not None:
        try:
            check_models_within_team(key.spec, team.spec)
        except SpecValidationError as error:
            raise ResolutionError(error.field, "ModelsOutsideTeam", error.message) from error
        models = models or list(team.spec.models)
        resolved_team = resolve_team(team, objects)
        key_tag = resolved_team.scope.tag
        scopes.extend([resolved_team.scope, *resolved_team.pools])
        if key.spec.user is not None:
            scopes.append(member_scope(key.spec.user, team, resolved_team.scope))
        if resolved_team.end_users is not None:
            end_users.append(resolved_team.end_users)
    key_anchor = _anchor_ms(key.metadata.creation_timestamp)
    key_scope, *key_pools = _subject_scopes(
        "key",
        scope_id=key_scope_id(namespace, key.metadata.name),
        tag=key_tag,
        label=f"key {key.metadata.name}",
        spec=key.spec,
        anchor_ms=key_anchor,
        namespace=namespace,
        objects=objects,
    )
    counted = {scope.id for scope in scopes}  # a pool the team draws on already
    key_increases = increases_for("ApiKey", key.metadata.name, objects.overrides)
    scopes.append(_raised(key_scope, key_increases))
    scopes.extend(pool for pool in key_pools if pool.id not in counted)
    key_end_users = _end_user_template(key.spec, key_scope, key_anchor, namespace, objects)
    if key_end_users is not None:
        end_users.append(key_end_users)
    return ResolvedPolicy(
        key_hash=key_hash,
        namespace=namespace,
        key_name=key.metadata.name,
        team=None if team is None else team.metadata.name,
        user=key.spec.user,
        models=models,
        expires_at=key.spec.expires,
        blocked=key.spec.blocked,
        priority=key.spec.priority,
        scopes=scopes,
        end_users=end_users,
    )
