"""Budget: a reusable spend limit (a "tier"); every subject that references it gets its
own counter with these limits."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from llmquota.durations import DEFAULT_ZONE, parse_duration
from llmquota.models.common import (
    CONDITIONS_LIST,
    Condition,
    CrdInfo,
    Duration,
    Enforcement,
    FailurePolicy,
    Money,
    ResourceModel,
    TimeZone,
    WireModel,
)

__all__ = ["MAX_WINDOWS", "Budget", "BudgetSpec", "BudgetStatus", "BudgetWindow"]

MAX_WINDOWS = 8
"""Bounds `windows`: every window is one more counter per request, and the API server
costs the CEL rules over the list."""


class BudgetWindow(WireModel):
    """A further window of the same budget: its own maxBudget over its own duration."""

    max_budget: Money = Field(
        description="Most USD that may be spent in this window. For example 2."
    )
    budget_duration: Duration = Field(
        description="This window's length or calendar period, e.g. 1d or monthly; each "
        "window of a Budget has a different one."
    )


class BudgetSpec(WireModel):
    """Spend limits in USD for one window."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.softBudget) || self.softBudget <= self.maxBudget",
                    "message": "softBudget must be less than or equal to maxBudget",
                    "fieldPath": ".softBudget",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!has(self.windows) || !has(self.budgetDuration) || "
                    "self.windows.all(w, w.budgetDuration != self.budgetDuration)",
                    "message": "windows[].budgetDuration must differ from budgetDuration "
                    "(the main window)",
                    "fieldPath": ".windows",
                    "reason": "FieldValueDuplicate",
                },
            ]
        }
    )

    max_budget: Money = Field(
        description="Most USD that may be spent in one window; requests are refused once "
        "spend (plus what in-flight requests reserved) reaches it. For example 10."
    )
    soft_budget: Money | None = Field(
        default=None,
        description="USD at which a warning is raised (SoftBudgetExceeded condition, an "
        "Event and a metric) while requests are still admitted. At most maxBudget.",
    )
    budget_duration: Duration | None = Field(
        default=None,
        description="Window after which spend resets to zero: `30s`, `10m`, `1h`, `30d`, "
        "`1w` (7d), cut from the subject's creation; or a calendar period starting at "
        "midnight in timeZone: `daily`, `weekly` (Monday), `monthly` (the 1st; also `1mo`), "
        "`quarterly` (Jan/Apr/Jul/Oct 1st), `yearly`. Absent: spend never resets.",
    )
    time_zone: TimeZone = Field(
        default=DEFAULT_ZONE,
        description="IANA time zone whose midnight the calendar windows (daily, weekly, "
        "monthly, quarterly, yearly) of this budget start at, daylight saving included: a "
        "day there may last 23 or 25 hours. For example Europe/Berlin. Default UTC.",
    )
    windows: list[BudgetWindow] = Field(
        default_factory=list,
        max_length=MAX_WINDOWS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["budgetDuration"],
        },
        description="Further windows besides the main one (maxBudget over budgetDuration), "
        "e.g. [{maxBudget: 2, budgetDuration: daily}]: a request must fit every window, and "
        "a refusal names the window that ran out. Each has its own counter; a "
        "BudgetOverride raises every window by its increase.",
    )
    model_max_budget: dict[str, Money] = Field(
        default_factory=dict,
        description="Per-model caps in USD inside the same window, e.g. {gpt-4o: 5}.",
    )
    failure_policy: FailurePolicy = Field(
        default="Closed",
        description="While the store (Redis) is unreachable: Closed refuses requests this "
        "budget applies to (503 service_unavailable); Open lets them through uncounted. A "
        "request is let through only when every limit that applies to it is Open (or the "
        "sidecar runs with --fail-open).",
    )
    enforcement: Enforcement = Field(
        default="Enforce",
        description="Enforce refuses requests once the budget is exhausted. Audit counts "
        "and reports exactly the same (status, conditions, Events, metrics) but never "
        "refuses: a request it would refuse is served with the header `x-llmquota-audit` "
        "and counted in llmquota_audit_refusals_total. Switching Audit to Enforce keeps the "
        "window's spend.",
    )

    @model_validator(mode="after")
    def _soft_within_max(self) -> Self:
        if self.soft_budget is not None and self.soft_budget > self.max_budget:
            msg = (
                f"softBudget ({self.soft_budget}) must be less than or equal to "
                f"maxBudget ({self.max_budget})"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _windows_distinct(self) -> Self:
        seen = {parse_duration(self.budget_duration).wire: "budgetDuration"}
        for index, window in enumerate(self.windows):
            wire = parse_duration(window.budget_duration).wire
            if wire in seen:
                msg = (
                    f"windows[{index}].budgetDuration {window.budget_duration!r} is the "
                    f"same window as {seen[wire]}; give each window a different duration"
                )
                raise ValueError(msg)
            seen[wire] = f"windows[{index}].budgetDuration"
        return self


class BudgetStatus(WireModel):
    """What the operator observed about a Budget."""

    subjects: int | None = Field(
        default=None, description="How many Teams and ApiKeys reference this Budget."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=CONDITIONS_LIST,
        description="Ready: the Budget is valid and applied.",
    )


class Budget(ResourceModel[BudgetSpec, BudgetStatus]):
    """A Budget: a reusable spend limit; each subject referencing it gets its own counter."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="Budget",
        plural="budgets",
        short_names=("lqb",),
        printer_columns=(
            {"name": "Max", "type": "number", "jsonPath": ".spec.maxBudget"},
            {"name": "Soft", "type": "number", "jsonPath": ".spec.softBudget", "priority": 1},
            {"name": "Duration", "type": "string", "jsonPath": ".spec.budgetDuration"},
            {"name": "Zone", "type": "string", "jsonPath": ".spec.timeZone", "priority": 1},
            {"name": "Enforcement", "type": "string", "jsonPath": ".spec.enforcement"},
            {"name": "Subjects", "type": "integer", "jsonPath": ".status.subjects"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    )
