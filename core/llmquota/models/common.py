"""Building blocks every resource shares: camelCase wire names, money, durations, refs,
conditions and the resource envelope.

Field descriptions here become `kubectl explain` text, so they are written for users.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

from llmquota.durations import SPELLINGS, check_zone, parse_duration

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "CONDITIONS_LIST",
    "DURATION_PATTERN",
    "Condition",
    "CrdInfo",
    "Duration",
    "Enforcement",
    "FailurePolicy",
    "Money",
    "ObjectMeta",
    "ObjectRef",
    "ResourceModel",
    "SpecValidationError",
    "TimeZone",
    "WireModel",
]

API_GROUP = "llmquota.dev"
API_VERSION = "v1alpha1"

# `<int>s|m|h|d|w` or a calendar name; zero-length windows make no sense, so no leading
# zero. `1w` is 7d and `1mo` is `monthly`: the spellings LiteLLM users bring.
DURATION_PATTERN = r"^([1-9][0-9]{0,8}[smhdw]|1mo|daily|weekly|monthly|quarterly|yearly)$"
# IANA names: `Area/Location` parts of letters, digits, `_`, `-` and `+` (Etc/GMT+5).
# Whether the zone exists is checked against the zone data when the spec is parsed.
ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]{0,63}(/[A-Za-z0-9_+-]{1,64}){0,2}$"

CONDITIONS_LIST: dict[str, JsonValue] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
"""Conditions are a list-map keyed on `type` (Kubernetes API conventions)."""

Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FailurePolicy = Literal["Closed", "Open"]
"""What a limit does while the store is unreachable: refuse (503) or admit uncounted."""
Enforcement = Literal["Enforce", "Audit"]
"""Whether a limit refuses (Enforce) or is only counted and reported (Audit)."""


def _check_duration(value: Any) -> Any:
    """Refuse a bad duration saying what to write (the parser's message), before the
    pattern would refuse it quoting a regular expression."""
    if isinstance(value, str):
        parse_duration(value)
    return value


# The pattern comes before the validator: pydantic puts a constraint given after a
# validator outside the JSON schema, and the CRD (generated from it) would then let any
# string through the API server.
Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        description=f"A window: {SPELLINGS}. `1w` is 7d, cut from the subject's "
        "creation; the calendar names start at midnight in timeZone: daily, weekly (Monday), "
        "monthly (the 1st; `1mo` is the same), quarterly (Jan/Apr/Jul/Oct 1st), yearly.",
    ),
    BeforeValidator(_check_duration),
]


def _check_zone(value: Any) -> Any:
    """Refuse a zone the zone data do not know, naming the field."""
    if isinstance(value, str):
        check_zone(value)
    return value


TimeZone = Annotated[
    str,
    Field(
        pattern=ZONE_PATTERN,
        max_length=128,
        description="An IANA time zone, e.g. Europe/Berlin or UTC.",
    ),
    BeforeValidator(_check_zone),
]


class SpecValidationError(ValueError):
    """A resource that parsed but breaks a rule spanning resources; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class WireModel(BaseModel):
    """A model whose fields are camelCase on the wire and snake_case in Python.

    Unknown fields are refused: a typo in a manifest must not silently mean "no limit".
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class ObjectRef(WireModel):
    """A reference to another resource in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        description="Name of the referenced resource, in the same namespace.",
    )


class Condition(WireModel):
    """One observation about a resource (Kubernetes API conventions)."""

    type: str = Field(description="CamelCase condition type, e.g. Ready or BudgetExceeded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason for the last change.")
    message: str = Field(default="", max_length=1024, description="Human-readable detail.")
    last_transition_time: datetime = Field(
        description="When the status last changed between True, False and Unknown."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this condition was computed from."
    )


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata llmquota reads."""

    model_config = ConfigDict(extra="ignore", frozen=True, alias_generator=to_camel)

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class CrdInfo(BaseModel):
    """How one kind is presented by the API server: names and printer columns."""

    model_config = ConfigDict(frozen=True)

    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[dict[str, Any], ...]


SpecT = TypeVar("SpecT", bound=WireModel)
StatusT = TypeVar("StatusT", bound=WireModel)


class ResourceModel(BaseModel, Generic[SpecT, StatusT]):
    """A whole custom resource: the envelope around a spec and a status."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    crd: ClassVar[CrdInfo]

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT | None = None
