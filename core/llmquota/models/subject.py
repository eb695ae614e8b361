"""What Teams and ApiKeys share: they are the subjects that spend and are limited."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import Field, JsonValue, model_validator

from llmquota.models.budget import BudgetSpec
from llmquota.models.common import CONDITIONS_LIST, Condition, ObjectRef, WireModel
from llmquota.models.ratelimit import RateLimitSpec

__all__ = [
    "SUBJECT_VALIDATIONS",
    "Forecast",
    "SubjectSpec",
    "SubjectStatus",
    "WindowStatus",
    "subject_printer_columns",
]


def _exclusive(inline: str, ref: str) -> JsonValue:
    return {
        "rule": f"!(has(self.{inline}) && has(self.{ref}))",
        "message": f"{inline} and {ref} are mutually exclusive: set one of them",
        "fieldPath": f".{ref}",
        "reason": "FieldValueForbidden",
    }


SUBJECT_VALIDATIONS: list[JsonValue] = [
    _exclusive("budget", "budgetRef"),
    _exclusive("rateLimit", "rateLimitRef"),
]


class SubjectSpec(WireModel):
    """Budgets, limits and models of a Team or an ApiKey."""

    budget: BudgetSpec | None = Field(
        default=None, description="An inline Budget spec. Mutually exclusive with budgetRef."
    )
    budget_ref: ObjectRef | None = Field(
        default=None, description="A Budget in the same namespace. Exclusive with budget."
    )
    rate_limit: RateLimitSpec | None = Field(
        default=None, description="An inline RateLimit spec. Exclusive with rateLimitRef."
    )
    rate_limit_ref: ObjectRef | None = Field(
        default=None, description="A RateLimit in the same namespace. Exclusive with rateLimit."
    )
    end_user_budget_ref: ObjectRef | None = Field(
        default=None,
        description="A Budget that each distinct `user` sent in request bodies gets on its own.",
    )
    end_user_rate_limit_ref: ObjectRef | None = Field(
        default=None,
        description="A RateLimit that each distinct `user` sent in request bodies gets on its own.",
    )
    models: list[str] = Field(
        default_factory=list,
        description="Models that may be used; empty means all (within the team's, for a key).",
    )

    @model_validator(mode="after")
    def _inline_or_ref(self) -> Self:
        for inline, ref in (("budget", "budget_ref"), ("rate_limit", "rate_limit_ref")):
            if getattr(self, inline) is not None and getattr(self, ref) is not None:
                inline_wire = type(self).model_fields[inline].alias
                ref_wire = type(self).model_fields[ref].alias
                msg = f"{inline_wire} and {ref_wire} are mutually exclusive: set one of them"
                raise ValueError(msg)
        return self


class ActiveOverride(WireModel):
    """A BudgetOverride raising this subject's maxBudget now."""

    name: str = Field(description="The BudgetOverride's name.")
    increase: float = Field(description="USD it adds to maxBudget.")
    expires: datetime = Field(description="When it stops applying.")


class Forecast(WireModel):
    """Where spend is heading at its recent rate (the operator's --forecast-span)."""

    burn_rate_usd_per_hour: float = Field(
        description="USD spent per hour over the recent span of the current window."
    )
    exhausts_at: datetime | None = Field(
        default=None,
        description="When maxBudget is reached at that rate; absent without a maxBudget, "
        "when nothing is spent, or when the budget is already exhausted.",
    )


class WindowStatus(WireModel):
    """One window of the subject's budget: its limit, spend and reset."""

    budget_duration: str = Field(
        description="The window, as budgetDuration is written (e.g. 1d, monthly); `none` "
        "for a main window that never resets."
    )
    max_budget: float | None = Field(
        default=None, description="The window's maxBudget in USD, raised by active overrides."
    )
    spend: float = Field(description="USD spent in the window's current period.")
    remaining: float | None = Field(
        default=None, description="USD left in the window (maxBudget - spend)."
    )
    reset_at: datetime | None = Field(
        default=None, description="When the window's current period ends; absent: never."
    )


class SubjectStatus(WireModel):
    """Spend and state of a Team or an ApiKey, written by the operator."""

    spend: float | None = Field(default=None, description="USD spent in the current window.")
    max_budget: float | None = Field(
        default=None, description="The effective maxBudget (inline or referenced), in USD."
    )
    remaining: float | None = Field(
        default=None, description="USD left in the current window (maxBudget - spend)."
    )
    budget_reset_at: datetime | None = Field(
        default=None, description="When the current budget window ends and spend resets."
    )
    model_spend: dict[str, float] = Field(
        default_factory=dict, description="USD spent per model in the current window."
    )
    windows: list[WindowStatus] = Field(
        default_factory=list,
        description="Every window of the budget, the main one (spend, maxBudget above) "
        "first, then spec.windows in order.",
    )
    tightest_window: WindowStatus | None = Field(
        default=None,
        description="The window with the least remaining, the one a request runs out of "
        "first (the main one when there is only one); kubectl get shows it.",
    )
    overrides: list[ActiveOverride] = Field(
        default_factory=list,
        description="Active BudgetOverrides; maxBudget and remaining include their increase.",
    )
    forecast: Forecast | None = Field(
        default=None,
        description="The burn rate and when, at that rate, the budget runs out; absent "
        "until enough of the window has been measured.",
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=CONDITIONS_LIST,
        description="Ready, BudgetExceeded, SoftBudgetExceeded, BudgetAtRisk (and Expired, "
        "Blocked on keys). A key refused by its team's or the global budget says so in its "
        "BudgetExceeded.",
    )


def subject_printer_columns(*extra: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The columns `kubectl get` shows for a subject: the first question is money, in the
    window that runs out first (with one window, the budget's own)."""
    tightest = ".status.tightestWindow"
    return (
        {"name": "Spend", "type": "number", "jsonPath": f"{tightest}.spend"},
        {"name": "Budget", "type": "number", "jsonPath": f"{tightest}.maxBudget"},
        {"name": "Remaining", "type": "number", "jsonPath": f"{tightest}.remaining"},
        {"name": "Resets", "type": "string", "jsonPath": f"{tightest}.resetAt"},
        {"name": "Window", "type": "string", "jsonPath": f"{tightest}.budgetDuration"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        *extra,
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )
