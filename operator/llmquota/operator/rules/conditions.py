"""Conditions as a pure function: old conditions + observations -> new conditions.

`lastTransitionTime` moves only when a condition's status flips (Kubernetes API
conventions), so a status sync that observes the same thing produces an identical list
and the operator sends no patch. The flips are returned too: each one is an Event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "MESSAGE_LIMIT",
    "EventSpec",
    "Observation",
    "Transition",
    "condition_holds",
    "event_for",
    "events_for",
    "format_time",
    "merge_conditions",
    "no_events",
]

MESSAGE_LIMIT = 1024
"""The CRD caps condition messages at this length."""

ConditionStatus = Literal["True", "False", "Unknown"]
EventSpec = tuple[str, str, str]
"""(type, reason, message) of one Event to post."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What the operator saw for one condition type just now."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""

    @classmethod
    def of(cls, type_: str, *, holds: bool, reason: str, message: str = "") -> Observation:
        """An observation from a boolean: True when `holds`."""
        return cls(type_, "True" if holds else "False", reason, message)


@dataclass(frozen=True, slots=True)
class Transition:
    """A condition whose status changed (or appeared): worth an Event."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    previous: ConditionStatus | None


def condition_holds(status: Mapping[str, Any], type_: str) -> bool:
    """Whether a status (as last seen) has the condition `type_` True."""
    return any(
        entry.get("type") == type_ and entry.get("status") == "True"
        for entry in status.get("conditions") or []
    )


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second, as Kubernetes writes times."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def merge_conditions(
    old: Iterable[Mapping[str, Any]],
    observations: Sequence[Observation],
    *,
    generation: int | None,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[Transition]]:
    """New conditions and the transitions among them.

    Entries keep their order (so re-observing the same thing yields an equal list); types
    not observed keep their old entry (a handler observes Ready, the status sync the
    budgets); types seen for the first time are appended in observation order.
    """
    merged = [dict(entry) for entry in old]
    position = {str(entry.get("type")): index for index, entry in enumerate(merged)}
    transitions: list[Transition] = []
    for observation in observations:
        index = position.get(observation.type)
        before = None if index is None else merged[index]
        before_status = None if before is None else before.get("status")
        flipped = before_status != observation.status
        entry = {
            "type": observation.type,
            "status": observation.status,
            "reason": observation.reason,
            "message": observation.message[:MESSAGE_LIMIT],
            "lastTransitionTime": (
                format_time(now) if before is None or flipped else before["lastTransitionTime"]
            ),
            "observedGeneration": generation,
        }
        if index is None:
            position[observation.type] = len(merged)
            merged.append(entry)
        else:
            merged[index] = entry
        if flipped:
            transitions.append(
                Transition(
                    observation.type,
                    observation.status,
                    observation.reason,
                    observation.message,
                    before_status,
                )
            )
    return merged, transitions


_PROBLEMS = {"BudgetExceeded", "SoftBudgetExceeded", "BudgetAtRisk", "Expired", "Blocked"}


def event_for(transition: Transition) -> EventSpec | None:
    """(Event type, reason, message) for a transition worth telling, None otherwise.

    Going bad is a Warning; recovering is Normal; the first observation of a healthy
    state (no previous status) is not news.
    """
    if transition.type == "Ready":
        if transition.status == "False":
            return "Warning", transition.reason, transition.message
        if transition.previous is None:
            return None
        return "Normal", "Ready", transition.message or "resolved and applied"
    if transition.type in _PROBLEMS:
        if transition.status == "True":
            return "Warning", transition.type, transition.message
        if transition.previous == "True":
            return "Normal", transition.reason, transition.message
    return None


def events_for(transitions: Iterable[Transition]) -> list[EventSpec]:
    """The Events of a status write: one per condition flip worth telling (`event_for`)."""
    return [event for transition in transitions if (event := event_for(transition)) is not None]


def no_events(transitions: Iterable[Transition]) -> list[EventSpec]:
    """For a status whose flips are not news (a Budget's or RateLimit's Ready)."""
    del transitions
    return []
