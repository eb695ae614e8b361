"""ApiKey: a virtual key that workloads present to the sidecar."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import ConfigDict, Field

from llmquota.models.common import CrdInfo, ResourceModel, SpecValidationError
from llmquota.models.subject import (
    SUBJECT_VALIDATIONS,
    SubjectSpec,
    SubjectStatus,
    subject_printer_columns,
)
from llmquota.models.team import TeamSpec

__all__ = ["ApiKey", "ApiKeySpec", "ApiKeyStatus", "check_models_within_team"]

_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class ApiKeySpec(SubjectSpec):
    """A key's team, owner, secret, budgets, limits and state."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SUBJECT_VALIDATIONS})

    team: str | None = Field(
        default=None,
        max_length=253,
        pattern=_NAME,
        description="A Team in the same namespace; its budgets and limits apply too.",
    )
    user: str | None = Field(
        default=None,
        max_length=253,
        description="The internal user who owns the key; the team member's cap applies.",
    )
    secret_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=_NAME,
        description="Secret holding the key in data.key. The operator generates an `sk-...` "
        "key there when it is absent. Default: the ApiKey's name.",
    )
    priority: str | None = Field(
        default=None,
        max_length=63,
        description="Priority class for RateLimits with allocation Dynamic, e.g. prod.",
    )
    expires: datetime | None = Field(
        default=None, description="After this time the key is refused (401 key_expired)."
    )
    blocked: bool = Field(default=False, description="When true the key is refused (401).")


class ApiKeyStatus(SubjectStatus):
    """A key's spend and state."""

    key_hint: str | None = Field(
        default=None, description="The key's first and last characters, e.g. sk-...a1b2."
    )


class ApiKey(ResourceModel[ApiKeySpec, ApiKeyStatus]):
    """An ApiKey: a virtual key that workloads present to the llmquota sidecar."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="ApiKey",
        plural="apikeys",
        short_names=("lqkey",),
        printer_columns=subject_printer_columns(
            {"name": "Team", "type": "string", "jsonPath": ".spec.team"},
            {"name": "Key", "type": "string", "jsonPath": ".status.keyHint", "priority": 1},
            {"name": "Expires", "type": "string", "jsonPath": ".spec.expires", "priority": 1},
        ),
    )


def check_models_within_team(key: ApiKeySpec, team: TeamSpec) -> None:
    """Refuse a key whose models are outside its team's (a team with none allows all)."""
    if not team.models:
        return
    outside = sorted(set(key.models) - set(team.models))
    if outside:
        raise SpecValidationError(
            "spec.models",
            f"{', '.join(outside)} not among team {key.team}'s models ({', '.join(team.models)})",
        )
