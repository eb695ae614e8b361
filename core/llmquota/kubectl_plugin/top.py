"""`kubectl llmquota top`: Teams and ApiKeys by spend, remaining, reset and forecast."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from llmquota.kubectl_plugin.output import (
    NONE,
    format_table,
    format_usd,
    iso_time,
    time_until,
)
from llmquota.kubectl_plugin.subjects import SubjectView

__all__ = ["SORT_KEYS", "SortKey", "sort_subjects", "state", "top_document", "top_table"]

SortKey = Literal["spend", "remaining", "reset", "forecast", "burn", "name"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)

# Conditions that say something is wrong or about to be, in the order they are shown.
_PROBLEMS = ("Expired", "Blocked", "BudgetExceeded", "BudgetAtRisk", "SoftBudgetExceeded")


def state(subject: SubjectView) -> str:
    """The conditions that matter, joined; else Ready or NotReady (or "-": no status)."""
    problems = [condition for condition in _PROBLEMS if subject.holds(condition)]
    if problems:
        return ",".join(problems)
    ready = subject.conditions.get("Ready")
    if ready is None:
        return NONE
    return "Ready" if ready.status == "True" else f"NotReady:{ready.reason}"


def _seconds(moment: datetime | None) -> float:
    return math.inf if moment is None else moment.timestamp()


def _descending(amount: float | None) -> float:
    return math.inf if amount is None else -amount


def _ascending(amount: float | None) -> float:
    return math.inf if amount is None else amount


_ORDER: dict[str, Callable[[SubjectView], Any]] = {
    "spend": lambda subject: _descending(subject.allowance.spend),
    "remaining": lambda subject: _ascending(subject.allowance.remaining),
    "reset": lambda subject: _seconds(subject.allowance.reset_at),
    "forecast": lambda subject: _seconds(subject.forecast.exhausts_at),
    "burn": lambda subject: _descending(subject.forecast.burn_rate_usd_per_hour),
    "name": lambda _subject: 0,
}


def sort_subjects(subjects: Sequence[SubjectView], by: SortKey) -> list[SubjectView]:
    """Most spend first, least remaining first, soonest reset or exhaustion first, highest
    burn first, or by name; subjects without the value last; ties by namespace and name."""
    order = _ORDER[by]
    return sorted(
        subjects,
        key=lambda subject: (order(subject), subject.namespace, subject.kind, subject.name),
    )


def _burn(subject: SubjectView) -> str:
    rate = subject.forecast.burn_rate_usd_per_hour
    return NONE if rate is None else format_usd(rate)


def top_table(subjects: Sequence[SubjectView], now: datetime, *, all_namespaces: bool) -> str:
    """The table `top` prints; NAMESPACE first with -A, as kubectl does."""
    headers = [
        "NAME",
        "TEAM",
        "SPEND",
        "BUDGET",
        "REMAINING",
        "RESETS IN",
        "BURN/H",
        "EXHAUSTS IN",
        "STATUS",
    ]
    rows = []
    for subject in subjects:
        allowance = subject.allowance
        row = [
            subject.ref,
            (subject.team if subject.kind == "ApiKey" else None) or NONE,
            format_usd(allowance.spend),
            format_usd(allowance.max_budget),
            format_usd(allowance.remaining),
            time_until(allowance.reset_at, now),
            _burn(subject),
            time_until(subject.forecast.exhausts_at, now),
            state(subject),
        ]
        rows.append([subject.namespace, *row] if all_namespaces else row)
    return format_table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


def top_document(subjects: Sequence[SubjectView]) -> dict[str, Any]:
    """What `top -o json|yaml` prints: the same rows, with times in RFC 3339."""
    return {
        "items": [
            {
                "kind": subject.kind,
                "namespace": subject.namespace,
                "name": subject.name,
                "team": subject.team if subject.kind == "ApiKey" else None,
                "spend": subject.allowance.spend,
                "maxBudget": subject.allowance.max_budget,
                "remaining": subject.allowance.remaining,
                "budgetResetAt": iso_time(subject.allowance.reset_at),
                "forecast": {
                    "burnRateUsdPerHour": subject.forecast.burn_rate_usd_per_hour,
                    "exhaustsAt": iso_time(subject.forecast.exhausts_at),
                },
                "status": state(subject),
            }
            for subject in subjects
        ]
    }
