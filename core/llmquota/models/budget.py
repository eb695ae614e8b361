"""Budget: a reusable spend limit (a "tier"); every subject that references it gets its
own counter with these limits."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from llmquota.models.common import (
    CONDITIONS_LIST,
    Condition,
    CrdInfo,
    Duration,
    FailurePolicy,
    Money,
    ResourceModel,
    WireModel,
)

__all__ = ["Budget", "BudgetSpec", "BudgetStatus"]


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
                }
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
        "`1w` (7d), or `monthly` (also `1mo`: the 1st of the month, 00:00 UTC). Fixed "
        "windows are cut from the subject's creation. Absent: spend never resets.",
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

    @model_validator(mode="after")
    def _soft_within_max(self) -> Self:
        if self.soft_budget is not None and self.soft_budget > self.max_budget:
            msg = (
                f"softBudget ({self.soft_budget}) must be less than or equal to "
                f"maxBudget ({self.max_budget})"
            )
            raise ValueError(msg)
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
            {"name": "Subjects", "type": "integer", "jsonPath": ".status.subjects"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    )
