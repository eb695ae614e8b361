"""Team: a group of keys sharing budgets, limits, allowed models and member caps."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from llmquota.models.common import CrdInfo, Money, ResourceModel, WireModel
from llmquota.models.subject import (
    SUBJECT_VALIDATIONS,
    SubjectSpec,
    SubjectStatus,
    subject_printer_columns,
)

__all__ = ["Team", "TeamMember", "TeamSpec", "TeamStatus"]


class TeamMember(WireModel):
    """An internal user of the team, with an optional cap inside the team's window."""

    user: str = Field(min_length=1, max_length=253, description="The internal user's id.")
    max_budget_in_team: Money | None = Field(
        default=None,
        description="Most USD this member may spend inside the team's budget window.",
    )


class TeamSpec(SubjectSpec):
    """A team's budgets, limits, models and members."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SUBJECT_VALIDATIONS})

    alias: str | None = Field(
        default=None, max_length=253, description="A display name, e.g. QA Prod Bot."
    )
    members: list[TeamMember] = Field(
        default_factory=list,
        description="Internal users of the team; keys with spec.user get the member's cap.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["user"]},
    )

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
