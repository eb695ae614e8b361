"""Hostile BudgetOverrides against the real API server: each is refused by the CRD
itself (OpenAPI and CEL), with the field named; the same manifests are refused by the
models that standalone mode validates with. CRD rules cannot read the clock, so an
override that has already expired is accepted (and never applied: see
tests/integration/operator/test_operator_overrides.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from llmquota.models import parse_resource

if TYPE_CHECKING:  # the fixtures provide it
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

VALID: dict[str, Any] = {
    "target": {"kind": "ApiKey", "name": "qa-bot"},
    "increase": 50,
    "expires": "2026-12-08T00:00:00Z",
    "reason": "launch-week load test",
}


def without(field: str) -> dict[str, Any]:
    return {name: value for name, value in VALID.items() if name != field}


HOSTILE = [
    pytest.param(without("expires"), "expires", id="no-expires"),
    pytest.param(without("reason"), "reason", id="no-reason"),
    pytest.param({**VALID, "reason": ""}, "reason", id="empty-reason"),
    pytest.param({**VALID, "reason": "   "}, "reason", id="blank-reason"),
    pytest.param({**VALID, "increase": 0}, "increase", id="zero-increase"),
    pytest.param({**VALID, "increase": -5}, "increase", id="negative-increase"),
    pytest.param({**VALID, "expires": "next tuesday"}, "expires", id="not-a-date"),
    pytest.param({**VALID, "target": {"kind": "Budget", "name": "x"}}, "kind", id="budget-target"),
    pytest.param({**VALID, "target": {"kind": "ApiKey"}}, "name", id="target-without-name"),
]


def manifest(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmquota.dev/v1alpha1",
        "kind": "BudgetOverride",
        "metadata": {"name": "hostile", "namespace": namespace},
        "spec": spec,
    }


@pytest.mark.parametrize(("spec", "field"), HOSTILE)
def test_kubectl_apply_refuses_a_bad_override_naming_the_field(
    spec: dict[str, Any], field: str, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    applied = kube_apiserver.kubectl(
        "apply", "-f", "-", input=json.dumps(manifest(spec, kube_namespace))
    )
    assert applied.returncode != 0, applied.stdout
    assert field in applied.stderr, applied.stderr
    # Standalone mode validates with the models: the same manifest is refused there too.
    with pytest.raises(ValidationError, match=field):
        parse_resource(manifest(spec, kube_namespace))


def test_an_override_that_has_already_expired_is_accepted(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    past = manifest({**VALID, "expires": "2020-01-01T00:00:00Z"}, kube_namespace)
    kube_apiserver.kubectl("apply", "-f", "-", input=json.dumps(past), check=True)
