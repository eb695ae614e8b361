"""BudgetOverrides: whether one applies, its Events, and its target's keys re-resolved.

The increase itself is enforced by the admit script against `expires` on Redis' clock
(see `llmquota.policy.resolve.increases_for`), so its end never waits for the operator.
What the operator adds: the override's Active condition, the Events that mark its apply
and its expiry, the target's `status.overrides`, and fresh policies for the target's
keys (an override applies within a second of its apply: one re-resolution and the
policy-change publication the sidecars follow).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from llmquota.models import ApiKey, BudgetOverride, Team
from llmquota.operator import service
from llmquota.operator.conditions import Observation, Transition, format_time
from llmquota.operator.dependents import keys_to_reresolve
from llmquota.operator.state import Gone, OperatorState
from llmquota.operator.team_view import team_budget_limits
from llmquota.policy.resolve import ResolutionError

__all__ = [
    "active_overrides",
    "override_events",
    "override_observation",
    "override_status",
    "record_expiries",
    "refresh_target",
    "target_of",
]

logger = logging.getLogger(__name__)


def override_observation(
    override: BudgetOverride, target_found: bool, target_capped: bool, now: datetime
) -> Observation:
    """The Active condition: True while applied, else why not (Expired first)."""
    target = f"{override.spec.target.kind} {override.spec.target.name}"
    if override.spec.expires <= now:
        expired = format_time(override.spec.expires)
        return Observation("Active", "False", "Expired", f"expired at {expired}")
    if not target_found:
        namespace = override.metadata.namespace
        return Observation("Active", "False", "TargetNotFound", f"{target} not in {namespace}")
    if not target_capped:
        return Observation(
            "Active", "False", "TargetHasNoBudget", f"{target} has no maxBudget to raise"
        )
    return Observation(
        "Active",
        "True",
        "Applied",
        f"maxBudget of {target} raised by ${override.spec.increase:g} until "
        f"{format_time(override.spec.expires)}",
    )


def override_events(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events that mark an apply and an expiry."""
    events = []
    for transition in transitions:
        if transition.type != "Active":
            continue
        if transition.status == "True":
            events.append(("Normal", "Applied", transition.message))
        elif transition.reason == "Expired" and transition.previous == "True":
            events.append(("Normal", "Expired", transition.message))
        elif transition.reason != "Expired":
            events.append(("Warning", transition.reason, transition.message))
    return events


def active_overrides(
    overrides: list[BudgetOverride], target: ApiKey | Team, now: datetime
) -> list[dict[str, Any]]:
    """`status.overrides` of a target: the overrides of it that have not expired."""
    kind = "ApiKey" if isinstance(target, ApiKey) else "Team"
    return [
        {
            "name": override.metadata.name,
            "increase": override.spec.increase,
            "expires": format_time(override.spec.expires),
        }
        for override in sorted(overrides, key=lambda o: o.metadata.name)
        if override.spec.target.kind == kind
        and override.spec.target.name == target.metadata.name
        and now < override.spec.expires
    ]


def target_of(state: OperatorState, override: BudgetOverride) -> ApiKey | Team | None:
    """The ApiKey or Team the override names, from the operator's indexes."""
    namespace, name = override.metadata.namespace, override.spec.target.name
    if override.spec.target.kind == "ApiKey":
        return state.indexes.keys.named(namespace, name)
    return state.indexes.teams.named(namespace, name)


def target_capped(state: OperatorState, target: ApiKey | Team) -> bool:
    """Whether the target has a maxBudget an override can raise (count-only has none)."""
    if isinstance(target, ApiKey):
        record = state.keys.get((target.metadata.namespace, target.metadata.name))
        policy = None if record is None else record.policy
        if policy is None:
            return target.spec.budget is not None or target.spec.budget_ref is not None
        own = next((scope for scope in policy.scopes if scope.kind == "key"), None)
        return own is not None and own.budget is not None and own.budget.max_nanos >= 0
    try:
        limits = team_budget_limits(target, state.indexes.objects(target.metadata.namespace))
    except ResolutionError:
        return False
    return limits.max_nanos >= 0


async def refresh_target(
    state: OperatorState, override: BudgetOverride, now: datetime, *, gone: bool = False
) -> None:
    """Re-resolve the target's keys and rewrite its `status.overrides`.

    `gone`: the override is being deleted, so resolution must not see it any more.
    """
    target = target_of(state, override)
    if target is None:
        return
    without: Gone | None = (
        ("BudgetOverride", override.metadata.namespace, override.metadata.name) if gone else None
    )
    namespace = override.metadata.namespace
    if isinstance(target, ApiKey):
        keys = [target]
        plural = "apikeys"
    else:
        keys = state.indexes.team_keys(namespace, target.metadata.name)
        plural = "teams"
    applied = keys_to_reresolve(keys, state.keys, state.applying())
    await service.refresh_keys(state, applied, without=without, known_key=True)
    remaining = [
        o
        for o in state.indexes.overrides.of(namespace)
        if not (gone and o.metadata.name == override.metadata.name)
    ]
    listed = active_overrides(remaining, target, now)
    await state.kube.patch_status(plural, namespace, target.metadata.name, {"overrides": listed})


def override_status(
    state: OperatorState, override: BudgetOverride, status: Mapping[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The override's status patch (Active, observedGeneration) and the Events it implies."""
    now = datetime.now(UTC)
    target = target_of(state, override)
    capped = target is not None and target_capped(state, target)
    observation = override_observation(override, target is not None, capped, now)
    status_update, transitions = service.update_status(
        state,
        override.metadata.uid,
        status,
        {
            "active": observation.status == "True",
            "observedGeneration": override.metadata.generation,
        },
        [observation],
        generation=override.metadata.generation,
        now=now,
    )
    return status_update, override_events(transitions)


async def record_expiries(state: OperatorState, now: datetime) -> int:
    """Mark every override past its `expires` that still shows Active; how many.

    Called by the status sync every --status-interval: the sidecars stopped applying the
    increase at that instant already (the admit script compares `expires` with Redis'
    clock); this is the record of it (Active False, an Event, the target refreshed). A
    kopf daemon per override did it to the second, but daemons put a finalizer on their
    objects, and removing the operator first then left them Terminating.
    """
    marked = 0
    for override in state.indexes.overrides.everywhere():
        shown = override.status.model_dump(by_alias=True, mode="json") if override.status else {}
        if override.spec.expires > now or shown.get("active") is False:
            continue
        status_update, events = override_status(state, override, shown)
        namespace, name = override.metadata.namespace, override.metadata.name
        if status_update:
            await state.kube.patch_status("budgetoverrides", namespace, name, status_update)
        for type_, reason, message in events:
            await service.post_event(state, override, type_, reason, message)
        await refresh_target(state, override, now)
        marked += 1
    return marked
