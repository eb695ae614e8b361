"""Invalid manifests, each with the field its refusal must name.

One table serves both gates a bad manifest meets: the CRD schema on the API server
(`kubectl apply`) and the standalone loader (`llmquota sidecar --manifests`). Both must
refuse every case, and say which field is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

__all__ = ["HOSTILE_CASES", "HostileCase", "hostile_params", "manifest"]


def manifest(kind: str, name: str, spec: Any, namespace: str | None = None) -> dict[str, Any]:
    """An llmquota object as one would `kubectl apply` it."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "llmquota.dev/v1alpha1", "kind": kind, "metadata": metadata,
            "spec": spec}  # fmt: skip


@dataclass(frozen=True)
class HostileCase:
    """One invalid object: its kind, spec, and the field its refusal must name."""

    id: str
    kind: str
    spec: dict[str, Any]
    field: str

    def manifest(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The object as one would `kubectl apply` it."""
        return manifest(self.kind, name, self.spec, namespace)


HOSTILE_CASES = [
    HostileCase("negative-max-budget", "Budget", {"maxBudget": -1}, "maxBudget"),
    HostileCase("missing-max-budget", "Budget", {"softBudget": 1}, "maxBudget"),
    HostileCase("max-budget-a-string", "Budget", {"maxBudget": "ten"}, "maxBudget"),
    HostileCase("soft-above-max", "Budget", {"maxBudget": 5, "softBudget": 8}, "softBudget"),
    HostileCase(
        "unknown-failure-policy",
        "Budget",
        {"maxBudget": 5, "failurePolicy": "Sometimes"},
        "failurePolicy",
    ),
    HostileCase(
        "rate-failure-policy-open-lowercase",
        "RateLimit",
        {"rpm": 5, "failurePolicy": "open"},
        "failurePolicy",
    ),
    HostileCase(
        "bad-duration", "Budget", {"maxBudget": 5, "budgetDuration": "10x"}, "budgetDuration"
    ),
    HostileCase(
        "several-months", "Budget", {"maxBudget": 5, "budgetDuration": "3mo"}, "budgetDuration"
    ),
    HostileCase(
        "zero-duration", "Budget", {"maxBudget": 5, "budgetDuration": "0s"}, "budgetDuration"
    ),
    HostileCase(
        "negative-model-budget",
        "Budget",
        {"maxBudget": 5, "modelMaxBudget": {"gpt-4o": -1}},
        "modelMaxBudget",
    ),
    HostileCase(
        "budget-and-budget-ref",
        "Team",
        {"budget": {"maxBudget": 5}, "budgetRef": {"name": "tier"}},
        "budgetRef",
    ),
    HostileCase(
        "rate-limit-and-ref",
        "ApiKey",
        {"rateLimit": {"rpm": 5}, "rateLimitRef": {"name": "std"}},
        "rateLimitRef",
    ),
    HostileCase("negative-rpm", "RateLimit", {"rpm": -1}, "rpm"),
    HostileCase("fractional-tpm", "RateLimit", {"tpm": 1.5}, "tpm"),
    HostileCase(
        "reservation-with-static",
        "RateLimit",
        {"rpm": 60, "allocation": "Static", "priorityReservation": {"prod": 0.5}},
        "priorityReservation",
    ),
    HostileCase(
        "share-above-one",
        "RateLimit",
        {"rpm": 60, "allocation": "Dynamic", "priorityReservation": {"prod": 1.5}},
        "priorityReservation",
    ),
    HostileCase(
        "shares-sum-above-one",
        "RateLimit",
        {"rpm": 60, "allocation": "Dynamic", "priorityReservation": {"prod": 0.9, "dev": 0.5}},
        "priorityReservation",
    ),
    HostileCase("unknown-allocation", "RateLimit", {"allocation": "Greedy"}, "allocation"),
    HostileCase(
        "duplicate-member",
        "Team",
        {"members": [{"user": "ishaan"}, {"user": "ishaan"}]},
        "members",
    ),
    HostileCase(
        "negative-member-cap",
        "Team",
        {"members": [{"user": "ishaan", "maxBudgetInTeam": -0.5}]},
        "maxBudgetInTeam",
    ),
    HostileCase("unknown-field", "Budget", {"maxBudget": 5, "maxBudgett": 50}, "maxBudgett"),
    HostileCase("bad-expires", "ApiKey", {"expires": "tomorrow"}, "expires"),
    HostileCase("blocked-a-string", "ApiKey", {"blocked": "maybe"}, "blocked"),
    HostileCase("team-not-a-name", "ApiKey", {"team": "QA Team/../x"}, "team"),
    HostileCase("models-a-string", "ApiKey", {"models": "gpt-4o"}, "models"),
    HostileCase("empty-ref-name", "ApiKey", {"budgetRef": {"name": ""}}, "budgetRef"),
]


def hostile_params() -> list[Any]:
    """HOSTILE_CASES as pytest parameters named by their ids."""
    return [pytest.param(case, id=case.id) for case in HOSTILE_CASES]
