"""A BudgetOverride's Active condition, its Events and its target's `status.overrides`.

The increase itself is enforced by the admit script against `expires` on Redis' clock
(`llmquota.policy.resolve.increases_for`); these decide only what the statuses and
Events say about it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmquota.models import ApiKey, BudgetOverride, Team
from llmquota.operator.rules.conditions import EventSpec, Observation, Transition, format_time

__all__ = ["active_overrides", "override_events", "override_observation"]


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


def override_events(transitions: list[Transition]) -> list[EventSpec]:
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
