"""RateLimit: a reusable set of request, token and concurrency limits."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from llmquota.models.common import (
    CONDITIONS_LIST,
    Condition,
    CrdInfo,
    Enforcement,
    FailurePolicy,
    ResourceModel,
    WireModel,
)

__all__ = ["ModelRateLimit", "RateLimit", "RateLimitSpec", "RateLimitStatus"]

Count = Annotated[int, Field(ge=0, le=2_000_000_000)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
MAX_PRIORITIES = 32
"""Bounds priorityReservation, so the API server can cost its CEL sum rule."""


class ModelRateLimit(WireModel):
    """Limits for one model."""

    rpm: Count | None = Field(default=None, description="Requests per minute. For example 60.")
    tpm: Count | None = Field(
        default=None, description="Tokens (input + output) per minute. For example 100000."
    )
    max_parallel_requests: Count | None = Field(
        default=None, description="Requests in flight at once. For example 10."
    )


class RateLimitSpec(ModelRateLimit):
    """Limits per minute and in flight, overall and per model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.priorityReservation) || "
                    "(has(self.allocation) && self.allocation == 'Dynamic')",
                    "message": "priorityReservation is only allowed with allocation: Dynamic",
                    "fieldPath": ".priorityReservation",
                    "reason": "FieldValueForbidden",
                },
                {
                    # The same tolerance as the model's check: 0.1 + 0.2 + 0.7 is not
                    # exactly 1 in floating point.
                    "rule": "!has(self.priorityReservation) || self.priorityReservation"
                    ".map(p, self.priorityReservation[p]).sum() <= 1.000000001",
                    "message": "priorityReservation shares must add up to at most 1",
                    "fieldPath": ".priorityReservation",
                    "reason": "FieldValueInvalid",
                },
            ]
        }
    )

    models: dict[str, ModelRateLimit] = Field(
        default_factory=dict,
        description="Per-model limits with the same fields, e.g. {gpt-4o: {rpm: 2}}.",
    )
    allocation: Literal["Static", "Dynamic"] = Field(
        default="Static",
        description="Static: each subject gets these limits. Dynamic: these limits are one "
        "pool, split among the keys that sent a request in the current minute, weighted by "
        "priorityReservation.",
    )
    priority_reservation: dict[str, Share] = Field(
        default_factory=dict,
        max_length=MAX_PRIORITIES,
        description="Only with Dynamic: share of the pool (0..1) reserved per ApiKey "
        "priority, e.g. {prod: 0.9, dev: 0.1}. Shares add up to at most 1.",
    )
    failure_policy: FailurePolicy = Field(
        default="Open",
        description="While the store (Redis) is unreachable: Open (the default for rate "
        "limits) lets requests through uncounted; Closed refuses them (503). A request is "
        "let through only when every limit that applies to it is Open.",
    )
    enforcement: Enforcement = Field(
        default="Enforce",
        description="Enforce refuses requests over these limits (429). Audit counts them "
        "exactly the same but never refuses: a request it would refuse is served with the "
        "header `x-llmquota-audit` and counted in llmquota_audit_refusals_total.",
    )

    @model_validator(mode="after")
    def _reservation_fits_allocation(self) -> Self:
        if self.priority_reservation and self.allocation != "Dynamic":
            msg = "priorityReservation is only allowed with allocation: Dynamic"
            raise ValueError(msg)
        total = sum(self.priority_reservation.values())
        if total > 1 + 1e-9:
            msg = f"priorityReservation shares add up to {total:g}, more than 1"
            raise ValueError(msg)
        return self


class RateLimitStatus(WireModel):
    """What the operator observed about a RateLimit."""

    subjects: int | None = Field(
        default=None, description="How many Teams and ApiKeys reference this RateLimit."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=CONDITIONS_LIST,
        description="Ready: the RateLimit is valid and applied.",
    )


class RateLimit(ResourceModel[RateLimitSpec, RateLimitStatus]):
    """A RateLimit: reusable requests, tokens and in-flight limits, static or pooled."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="RateLimit",
        plural="ratelimits",
        short_names=("lqrl",),
        printer_columns=(
            {"name": "RPM", "type": "integer", "jsonPath": ".spec.rpm"},
            {"name": "TPM", "type": "integer", "jsonPath": ".spec.tpm"},
            {"name": "Parallel", "type": "integer", "jsonPath": ".spec.maxParallelRequests"},
            {"name": "Allocation", "type": "string", "jsonPath": ".spec.allocation"},
            {"name": "Enforcement", "type": "string", "jsonPath": ".spec.enforcement"},
            {"name": "Subjects", "type": "integer", "jsonPath": ".status.subjects"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    )
