"""Counters + policy -> status, as pure functions.

The status sync reads counters from Redis and hands them here; what comes back is the
status the object should show and the conditions it implies. `merge_patch` then cuts
that down to what differs, so an unchanged object gets no patch at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from llmquota.durations import NEVER, Window
from llmquota.operator.rules.conditions import (
    Observation,
    Transition,
    format_time,
    merge_conditions,
)
from llmquota.policy.exhaustion import budget_exhausted
from llmquota.policy.limits import BudgetLimits, ScopeKind, WindowLimits, nanos, usd

__all__ = [
    "BudgetView",
    "CounterReading",
    "GuardView",
    "Seed",
    "StatusUpdate",
    "budget_observations",
    "budget_view",
    "ended_spend",
    "key_state_observations",
    "merge_patch",
    "parse_time_ms",
    "reset_worth_telling",
    "seed_from_status",
    "status_patch",
    "subject_status_fields",
    "window_view",
    "windows_fields",
]


@dataclass(frozen=True, slots=True)
class BudgetView:
    """One scope's budget as of now: its window, spend in it and its limits."""

    window: Window
    spend_nanos: int
    model_spend_nanos: dict[str, int]
    max_nanos: int | None
    soft_nanos: int | None = None
    reserved_nanos: int = 0
    """What in-flight requests hold: admission counts it, so BudgetExceeded does too."""
    duration: str = "none"
    """The window as budgetDuration is written (`30d`, `daily`, `none`)."""
    audit: bool = False
    """enforcement Audit: exhausted is reported, but nothing is refused."""


@dataclass(frozen=True, slots=True)
class Seed:
    """A counter as a status last showed it: enough to restore it after Redis lost it."""

    window: Window
    spend_nanos: int
    model_spend_nanos: dict[str, int] = field(default_factory=dict)


class CounterReading(Protocol):
    """A budget counter as read from Redis (the store's `BudgetCounter`)."""

    @property
    def window_start_ms(self) -> int | None: ...
    @property
    def spend_nanos(self) -> int: ...
    @property
    def reserved_nanos(self) -> int: ...
    @property
    def model_spend_nanos(self) -> Mapping[str, int]: ...


def budget_view(limits: BudgetLimits, counter: CounterReading, now_ms: int) -> BudgetView:
    """What a counter means now: a counter of an earlier window counts as zero."""
    window = limits.window_at(now_ms)
    fresh = counter.window_start_ms is not None and counter.window_start_ms == window.start_ms
    return BudgetView(
        window=window,
        spend_nanos=counter.spend_nanos if fresh else 0,
        model_spend_nanos=dict(counter.model_spend_nanos) if fresh else {},
        max_nanos=None if limits.max_nanos < 0 else limits.max_nanos_at(now_ms),
        soft_nanos=limits.soft_nanos,
        reserved_nanos=max(0, counter.reserved_nanos) if fresh else 0,
        duration=limits.duration,
        audit=limits.audit,
    )


def window_view(
    limits: BudgetLimits, window: WindowLimits, counter: CounterReading, now_ms: int
) -> BudgetView:
    """One further window of a budget (`windows`), from its own counter: cut from the
    budget's anchor and raised by its overrides, as admission does."""
    period = limits.period_at(window.window, now_ms)
    fresh = counter.window_start_ms is not None and counter.window_start_ms == period.start_ms
    max_nanos = limits.raise_max(window.max_nanos, now_ms)
    return BudgetView(
        window=period,
        spend_nanos=counter.spend_nanos if fresh else 0,
        model_spend_nanos={},
        max_nanos=None if max_nanos < 0 else max_nanos,
        reserved_nanos=max(0, counter.reserved_nanos) if fresh else 0,
        duration=window.duration,
        audit=limits.audit,
    )


def _window_status(view: BudgetView) -> dict[str, Any]:
    return {
        "budgetDuration": view.duration,
        "maxBudget": None if view.max_nanos is None else usd(view.max_nanos),
        "spend": usd(view.spend_nanos),
        "remaining": (
            None if view.max_nanos is None else usd(max(0, view.max_nanos - view.spend_nanos))
        ),
        "resetAt": None if view.window.end_ms == NEVER else _ms_to_time(view.window.end_ms),
    }


def windows_fields(own: BudgetView, further: Sequence[BudgetView]) -> dict[str, Any]:
    """`windows` (the main one first) and `tightestWindow`, the one with the least left,
    which `kubectl get` shows: with several windows, the one a request runs out of first."""
    windows = [_window_status(view) for view in (own, *further)]
    capped = [window for window in windows if window["remaining"] is not None]
    tightest = min(capped, key=lambda window: window["remaining"]) if capped else windows[0]
    return {"windows": windows, "tightestWindow": tightest}


def _ms_to_time(moment_ms: int) -> str:
    return format_time(datetime.fromtimestamp(moment_ms / 1000, tz=UTC))


def parse_time_ms(text: str | None) -> int | None:
    """An RFC 3339 time from a status to epoch milliseconds."""
    if not text:
        return None
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def subject_status_fields(view: BudgetView) -> dict[str, Any]:
    """spend, maxBudget, remaining, budgetResetAt and modelSpend of a Team or ApiKey."""
    return {
        "spend": usd(view.spend_nanos),
        "maxBudget": None if view.max_nanos is None else usd(view.max_nanos),
        "remaining": (
            None if view.max_nanos is None else usd(max(0, view.max_nanos - view.spend_nanos))
        ),
        "budgetResetAt": None if view.window.end_ms == NEVER else _ms_to_time(view.window.end_ms),
        "modelSpend": {
            model: usd(spent) for model, spent in sorted(view.model_spend_nanos.items())
        },
    }


def _spent(view: BudgetView, limit_nanos: int, field: str, *, reserved: bool) -> str:
    in_flight = (
        f" (+{usd(view.reserved_nanos):g} USD reserved in flight)"
        if reserved and view.reserved_nanos
        else ""
    )
    return f"spend {usd(view.spend_nanos):g} USD{in_flight} of {field} {usd(limit_nanos):g} USD"


def _threshold(
    condition: str,
    limit_nanos: int | None,
    reached: bool,
    message: str,
    *,
    absent: tuple[str, str],
    reasons: tuple[str, str],
) -> Observation:
    """Whether one limit is reached: `absent` is (reason, message) without the limit,
    `reasons` the reasons when reached and when not."""
    if limit_nanos is None:
        return Observation(condition, "False", *absent)
    reached_reason, below_reason = reasons
    return Observation.of(
        condition,
        holds=reached,
        reason=reached_reason if reached else below_reason,
        message=message,
    )


@dataclass(frozen=True, slots=True)
class GuardView:
    """A wider scope an ApiKey's requests must fit too (global, team, member)."""

    kind: ScopeKind
    label: str
    """What the sidecar's refusals call it, e.g. "team qa"."""
    view: BudgetView


_REFUSED_BY = {
    "global": "GlobalBudgetExhausted",
    "team": "TeamBudgetExhausted",
    "member": "MemberBudgetExhausted",
}


def _exhausted(view: BudgetView) -> bool:
    return budget_exhausted(view.max_nanos, view.spend_nanos, view.reserved_nanos)


_AUDITED = "; enforcement Audit: reported, requests are not refused"


def _audited(view: BudgetView) -> str:
    return _AUDITED if view.audit else ""


def _budget_exceeded(
    view: BudgetView, guards: Sequence[GuardView], windows: Sequence[BudgetView]
) -> Observation:
    """BudgetExceeded by admission's rule: the widest scope that refuses, else our own
    main window, else the first of our further windows that refuses."""
    refusing = next((guard for guard in guards if _exhausted(guard.view)), None)
    if refusing is not None and refusing.view.max_nanos is not None:
        spent = _spent(refusing.view, refusing.view.max_nanos, "maxBudget", reserved=True)
        return Observation(
            "BudgetExceeded",
            "True",
            _REFUSED_BY.get(refusing.kind, "BudgetExhausted"),
            f"refused by {refusing.label}: {spent}{_audited(refusing.view)}",
        )
    window = next((w for w in windows if _exhausted(w) and not _exhausted(view)), None)
    if window is not None and window.max_nanos is not None:
        spent = _spent(window, window.max_nanos, "maxBudget", reserved=True)
        return Observation(
            "BudgetExceeded",
            "True",
            "BudgetExhausted",
            f"{window.duration} window: {spent}{_audited(window)}",
        )
    limit = view.max_nanos
    return _threshold(
        "BudgetExceeded",
        limit,
        _exhausted(view),
        "" if limit is None else _spent(view, limit, "maxBudget", reserved=True) + _audited(view),
        absent=("NoBudget", "no maxBudget applies"),
        reasons=("BudgetExhausted", "WithinBudget"),
    )


def budget_observations(
    view: BudgetView, guards: Sequence[GuardView] = (), windows: Sequence[BudgetView] = ()
) -> list[Observation]:
    """BudgetExceeded and SoftBudgetExceeded of a subject's own budget view (and of its
    further `windows`).

    BudgetExceeded follows admission (`llmquota.policy.exhaustion`: spend plus what is
    reserved in flight), widest scope first: a key whose team or the global budget is
    exhausted is refused, and says by which scope. An audited budget (enforcement Audit)
    is reported exhausted just the same, its message saying that nothing is refused.
    SoftBudgetExceeded is a notice about settled spend only.
    """
    soft = view.soft_nanos
    return [
        _budget_exceeded(view, guards, windows),
        _threshold(
            "SoftBudgetExceeded",
            soft,
            soft is not None and view.spend_nanos >= soft,
            "" if soft is None else _spent(view, soft, "softBudget", reserved=False),
            absent=("NoSoftBudget", "no softBudget set"),
            reasons=("SoftBudgetCrossed", "BelowSoftBudget"),
        ),
    ]


def ended_spend(previous: Seed | None, view: BudgetView) -> int | None:
    """The spend of the window that just ended, if `view` is of a new window; else None.

    `previous` is what the last sync saw of the counter (None: not seen in this process,
    so no reset can be told). Spend settled after that sync and before the boundary is
    not in it.
    """
    if previous is None or previous.window.start_ms == view.window.start_ms:
        return None
    return previous.spend_nanos


def reset_worth_telling(ended: Sequence[int | None]) -> int | None:
    """One subject's counters' `ended_spend`s -> the spend to tell in one BudgetReset.

    Only a reset that matters is told: some counter of the subject (its own, or a team
    member's) had spend in the window that ended. None: nothing to tell.
    """
    spent = [spend for spend in ended if spend is not None]
    if not spent or max(spent) <= 0:
        return None
    return spent[0]


def seed_from_status(limits: BudgetLimits, status: Mapping[str, Any], now_ms: int) -> Seed | None:
    """The counter a status describes, if it still describes the current window."""
    spend = status.get("spend")
    if spend is None:
        return None
    window = limits.window_at(now_ms)
    shown_end = parse_time_ms(status.get("budgetResetAt"))
    if (shown_end or NEVER) != window.end_ms:
        return None  # the status is of an earlier window: the new one starts at zero
    model_spend = status.get("modelSpend") or {}
    return Seed(
        window=window,
        spend_nanos=nanos(float(spend)),
        model_spend_nanos={str(model): nanos(float(value)) for model, value in model_spend.items()},
    )


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired` for its keys.

    Empty when nothing differs. Keys of nested objects that `desired` lacks become null
    (deleted); lists and scalars are replaced whole.
    """
    patch: dict[str, Any] = {}
    for name, wanted in desired.items():
        present = current.get(name)
        if isinstance(wanted, Mapping) and isinstance(present, Mapping):
            nested = merge_patch(present, wanted)
            nested.update({gone: None for gone in present if gone not in wanted})
            if nested:
                patch[name] = nested
        elif wanted != present:
            patch[name] = dict(wanted) if isinstance(wanted, Mapping) else wanted
    return patch


def key_state_observations(
    *, expires: datetime | None, blocked: bool, now: datetime
) -> list[Observation]:
    """Expired and Blocked of an ApiKey, from its spec and the time."""
    expired = expires is not None and expires <= now
    return [
        Observation.of(
            "Expired",
            holds=expired,
            reason="KeyExpired" if expired else "NotExpired",
            message=f"expires {format_time(expires)}" if expires is not None else "never expires",
        ),
        Observation.of(
            "Blocked",
            holds=blocked,
            reason="KeyBlocked" if blocked else "NotBlocked",
            message="spec.blocked is true" if blocked else "",
        ),
    ]


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What to send (`patch`, empty for nothing), what flipped, and the new conditions."""

    patch: dict[str, Any]
    transitions: list[Transition]
    conditions: list[dict[str, Any]]


def status_patch(
    current: Mapping[str, Any],
    fields: Mapping[str, Any],
    observations: list[Observation],
    *,
    generation: int | None,
    now: datetime,
    known_conditions: Sequence[Mapping[str, Any]] | None = None,
) -> StatusUpdate:
    """The minimal status patch (empty: send nothing), the condition flips it makes and
    the conditions the status will show.

    `known_conditions` are the conditions this process last wrote, when it knows them
    better than `current` does: the status the sync last saw can predate a handler's
    patch, and as a merge patch replaces the whole list, building on the stale list would
    undo it.
    """
    base = current.get("conditions") or [] if known_conditions is None else known_conditions
    conditions, transitions = merge_conditions(base, observations, generation=generation, now=now)
    desired = {**fields, "conditions": conditions}
    return StatusUpdate(merge_patch(current, desired), transitions, conditions)
