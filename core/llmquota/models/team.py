"""Team: a group of keys sharing budgets, limits, allowed models and member caps."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import ConfigDict, Field, JsonValue, model_validator

from llmquota.models.common import CrdInfo, Money, ObjectRef, ResourceModel, WireModel
from llmquota.models.subject import (
    SUBJECT_VALIDATIONS,
    SubjectSpec,
    SubjectStatus,
    subject_printer_columns,
)

__all__ = [
    "WORKLOAD_SPEND_TOP",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Team",
    "TeamMember",
    "TeamSpec",
    "TeamStatus",
]

WORKLOAD_SPEND_TOP = 10
"""How many workloads `status.workloadSpend` lists: the ones that spent most."""


class TeamMember(WireModel):
    """An internal user of the team, with an optional cap inside the team's window."""

    user: str = Field(min_length=1, max_length=253, description="The internal user's id.")
    max_budget_in_team: Money | None = Field(
        default=None,
        description="Most USD this member may spend inside the team's budget window.",
    )


_REQUIREMENT_VALIDATIONS: list[JsonValue] = [
    {
        "rule": "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : size(self.values) == 0",
        "message": "values must be non-empty for In and NotIn, and empty for Exists and "
        "DoesNotExist",
        "fieldPath": ".values",
        "reason": "FieldValueInvalid",
    }
]


class LabelSelectorRequirement(WireModel):
    """One matchExpressions entry, as in a Deployment's selector."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": _REQUIREMENT_VALIDATIONS}
    )

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Label values: non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            msg = "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
            raise ValueError(msg)
        return self


class LabelSelector(WireModel):
    """Pods by their labels (a Kubernetes LabelSelector); every part must match."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a Pod must carry with exactly these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Further requirements on the Pod's labels."
    )


_TEAM_VALIDATIONS: list[JsonValue] = [
    *SUBJECT_VALIDATIONS,
    {
        "rule": "!has(self.workloadBudgetRef) || has(self.workloadSelector)",
        "message": "workloadBudgetRef needs a workloadSelector: it budgets the matched workloads",
        "fieldPath": ".workloadBudgetRef",
        "reason": "FieldValueRequired",
    },
]


class TeamSpec(SubjectSpec):
    """A team's budgets, limits, models and members."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _TEAM_VALIDATIONS})

    alias: str | None = Field(
        default=None, max_length=253, description="A display name, e.g. QA Prod Bot."
    )
    members: list[TeamMember] = Field(
        default_factory=list,
        description="Internal users of the team; keys with spec.user get the member's cap.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["user"]},
    )
    workload_selector: LabelSelector | None = Field(
        default=None,
        description="Keyless access: requests without a known ApiKey from injected Pods of "
        "this namespace whose labels match are charged to this team (an empty selector "
        "matches every injected Pod of the namespace).",
    )
    workload_budget_ref: ObjectRef | None = Field(
        default=None,
        description="A Budget that each workload (the Deployment, StatefulSet, DaemonSet, "
        "CronJob or Job owning a matched Pod) gets on its own counter.",
    )

    @model_validator(mode="after")
    def _workload_budget_needs_selector(self) -> Self:
        if self.workload_budget_ref is not None and self.workload_selector is None:
            msg = "workloadBudgetRef needs a workloadSelector: it budgets the matched workloads"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _members_unique(self) -> Self:
        users = [member.user for member in self.members]
        duplicates = sorted({user for user in users if users.count(user) > 1})
        if duplicates:
            msg = f"members: user {', '.join(duplicates)} is listed more than once"
            raise ValueError(msg)
        return self


class TeamStatus(SubjectStatus):
    """A team's spend, per model and per member, and its state."""

    member_spend: dict[str, float] = Field(
        default_factory=dict, description="USD spent per member in the current window."
    )
    workload_spend: dict[str, float] = Field(
        default_factory=dict,
        description="USD spent per workload (e.g. deployment/chatbot) in the current window "
        f"by keyless requests: the {WORKLOAD_SPEND_TOP} workloads that spent most.",
    )
    keys: int | None = Field(default=None, description="How many ApiKeys belong to this team.")


class Team(ResourceModel[TeamSpec, TeamStatus]):
    """A Team: keys that share a budget, rate limits, allowed models and member caps."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="Team",
        plural="teams",
        short_names=("lqteam",),
        printer_columns=subject_printer_columns(
            {"name": "Keys", "type": "integer", "jsonPath": ".status.keys", "priority": 1},
            {"name": "Alias", "type": "string", "jsonPath": ".spec.alias", "priority": 1},
        ),
    )
