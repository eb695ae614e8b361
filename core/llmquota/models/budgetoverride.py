"""BudgetOverride: a temporary, approved increase of one ApiKey's or Team's maxBudget.

Approval is whoever RBAC lets create the object (the chart's `llmquota-budget-approver`
ClusterRole), kept apart from the roles that edit ApiKeys and Teams, so a key's owner
cannot raise their own cap; the Kubernetes audit log records who approved what. An
override raises the target's main window while the clock is before `expires`: the admit
script compares `expires` with Redis' own clock, so the increase ends at that instant
in every sidecar, whether the operator is running then or not.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from llmquota.models.common import (
    CONDITIONS_LIST,
    Condition,
    CrdInfo,
    ResourceModel,
    WireModel,
)

__all__ = [
    "BudgetOverride",
    "BudgetOverrideSpec",
    "BudgetOverrideStatus",
    "OverrideTarget",
    "OverrideTargetKind",
]

OverrideTargetKind = Literal["ApiKey", "Team"]


class OverrideTarget(WireModel):
    """The ApiKey or Team whose budget is raised, in the override's namespace."""

    kind: OverrideTargetKind = Field(description="ApiKey or Team.")
    name: str = Field(
        min_length=1, max_length=253, description="Name of the ApiKey or Team, same namespace."
    )


class BudgetOverrideSpec(WireModel):
    """How much, for whom, until when, and why."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.reason.trim().size() > 0",
                    "message": "reason must say why the increase is approved",
                    "fieldPath": ".reason",
                    "reason": "FieldValueRequired",
                }
            ]
        }
    )

    target: OverrideTarget = Field(description="The ApiKey or Team whose budget is raised.")
    increase: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="USD added to the target's maxBudget (its main window) while the "
        "override is active. For example 50.",
    )
    expires: datetime = Field(
        description="When the increase ends (RFC 3339, e.g. 2026-12-08T00:00:00Z). An "
        "override whose expiry has passed is kept but never applied (Active False, "
        "reason Expired)."
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        description="Why the increase is approved, e.g. launch-week load test. Required.",
    )

    @field_validator("reason")
    @classmethod
    def _reason_says_something(cls, reason: str) -> str:
        if not reason.strip():
            msg = "reason must say why the increase is approved"
            raise ValueError(msg)
        return reason


class BudgetOverrideStatus(WireModel):
    """What the operator observed about a BudgetOverride."""

    active: bool | None = Field(
        default=None, description="True while the increase applies to its target."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=CONDITIONS_LIST,
        description="Active: True while applied; False with reason Expired, "
        "TargetNotFound or TargetHasNoBudget.",
    )


class BudgetOverride(ResourceModel[BudgetOverrideSpec, BudgetOverrideStatus]):
    """A temporary increase of an ApiKey's or Team's maxBudget, approved through RBAC."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="BudgetOverride",
        plural="budgetoverrides",
        short_names=("lqo",),
        printer_columns=(
            {"name": "Target", "type": "string", "jsonPath": ".spec.target.name"},
            {"name": "Kind", "type": "string", "jsonPath": ".spec.target.kind", "priority": 1},
            {"name": "Increase", "type": "number", "jsonPath": ".spec.increase"},
            {"name": "Expires", "type": "string", "jsonPath": ".spec.expires"},
            {"name": "Active", "type": "boolean", "jsonPath": ".status.active"},
            {"name": "Reason", "type": "string", "jsonPath": ".spec.reason", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    )
