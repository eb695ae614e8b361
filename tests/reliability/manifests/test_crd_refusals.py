"""Hostile manifests against the real API server: the CRD schema refuses each one, and
the refusal names the field (OpenAPI validation and CEL rules in the CRD itself)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from tests.reliability.manifests.hostile_cases import (
    HOSTILE_CASES,
    HostileCase,
    hostile_params,
    manifest,
)

if TYPE_CHECKING:  # the fixtures provide it
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration


def dry_run_apply(kube: KubeAPIServer, manifest_dict: dict[str, Any]) -> None:
    """Apply server-side without storing; fails when the API server refuses."""
    kube.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest_dict),
                 check=True)  # fmt: skip


@pytest.mark.parametrize("case", hostile_params())
def test_kubectl_apply_refuses_naming_the_field(
    case: HostileCase, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    hostile = json.dumps(case.manifest("hostile", kube_namespace))
    applied = kube_apiserver.kubectl("apply", "-f", "-", input=hostile)
    assert applied.returncode != 0, applied.stdout
    assert case.field in applied.stderr, applied.stderr
    missing = kube_apiserver.kubectl("get", case.kind.lower(), "hostile", "-n", kube_namespace)
    assert "NotFound" in missing.stderr


def test_an_unknown_field_is_pruned_when_client_validation_is_off(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    (case,) = [case for case in HOSTILE_CASES if case.id == "unknown-field"]
    typo = json.dumps(case.manifest("typo", kube_namespace))
    kube_apiserver.kubectl("apply", "--validate=false", "-f", "-", input=typo, check=True)
    stored = kube_apiserver.kubectl(
        "get", "budget", "typo", "-n", kube_namespace, "-o", "json", check=True
    )
    spec = json.loads(stored.stdout)["spec"]
    assert "maxBudgett" not in spec
    assert spec["maxBudget"] == 5


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"maxBudget": 0}, id="zero-budget"),
        pytest.param({"maxBudget": 5, "softBudget": 5}, id="soft-equals-max"),
        pytest.param({"maxBudget": 0.0001, "budgetDuration": "monthly"}, id="monthly"),
        pytest.param({"maxBudget": 1, "budgetDuration": "1w"}, id="litellm-week"),
        pytest.param({"maxBudget": 1, "budgetDuration": "1mo"}, id="litellm-month"),
    ],
)
def test_budget_edge_cases_are_accepted(
    spec: dict[str, object], kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    dry_run_apply(kube_apiserver, manifest("Budget", "edge", spec, kube_namespace))


@pytest.mark.parametrize(
    "shares",
    [
        pytest.param({}, id="none"),
        pytest.param({"a": 0.1, "b": 0.2, "c": 0.7}, id="floats-summing-to-one"),
        pytest.param({"prod": 1}, id="one-integer"),
    ],
)
def test_priority_reservations_that_add_up_to_one_are_accepted(
    shares: dict[str, float], kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    spec = {"rpm": 60, "allocation": "Dynamic", "priorityReservation": shares}
    dry_run_apply(kube_apiserver, manifest("RateLimit", "pool", spec, kube_namespace))
