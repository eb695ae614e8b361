"""Budget windows, calendar durations, time zones and enforcement against the real API
server: the CRD refuses what the models refuse, naming the field, and accepts the rest."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ValidationError
from tests.reliability.manifests.hostile_cases import manifest

from llmquota.models import BudgetSpec, RateLimitSpec

if TYPE_CHECKING:  # the fixtures provide it
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

REFUSED = [
    pytest.param("Budget", {"maxBudget": 1, "budgetDuration": "hourly"}, "budgetDuration",
                 id="not-a-calendar-name"),
    pytest.param("Budget", {"maxBudget": 1, "timeZone": "Europe Berlin"}, "timeZone",
                 id="zone-with-a-space"),
    pytest.param("Budget", {"maxBudget": 1, "timeZone": "../../etc/localtime"}, "timeZone",
                 id="zone-a-path"),
    pytest.param("Budget", {"maxBudget": 1, "windows": [{"maxBudget": 1}]},
                 "budgetDuration", id="window-without-duration"),
    pytest.param("Budget", {"maxBudget": 1, "windows": [{"budgetDuration": "1d"}]},
                 "maxBudget", id="window-without-max"),
    pytest.param("Budget", {"maxBudget": 1, "windows": [{"maxBudget": -1, "budgetDuration": "1d"}]},
                 "maxBudget", id="window-negative-max"),
    pytest.param("Budget", {"maxBudget": 1, "budgetDuration": "daily",
                            "windows": [{"maxBudget": 2, "budgetDuration": "daily"}]},
                 "windows", id="window-same-as-main"),
    pytest.param("Budget", {"maxBudget": 1, "windows": [{"maxBudget": 2, "budgetDuration": "1d"},
                                                        {"maxBudget": 3, "budgetDuration": "1d"}]},
                 "windows", id="two-windows-same-duration"),
    pytest.param("Budget", {"maxBudget": 1, "windows": [
        {"maxBudget": 1, "budgetDuration": f"{n}h"} for n in range(1, 10)]},
                 "windows", id="too-many-windows"),
    pytest.param("Budget", {"maxBudget": 1, "enforcement": "DryRun"}, "enforcement",
                 id="budget-enforcement"),
    pytest.param("RateLimit", {"rpm": 1, "enforcement": "audit"}, "enforcement",
                 id="rate-enforcement-lowercase"),
]  # fmt: skip

ACCEPTED = [
    pytest.param("Budget", {"maxBudget": 1, "budgetDuration": unit, "timeZone": "Asia/Kolkata"},
                 id=unit)
    for unit in ("daily", "weekly", "monthly", "quarterly", "yearly")
] + [
    pytest.param("Budget", {"maxBudget": 1, "timeZone": "Etc/GMT+5"}, id="etc-zone"),
    pytest.param("Budget", {"maxBudget": 5, "budgetDuration": "30d", "enforcement": "Audit",
                            "windows": [{"maxBudget": 1, "budgetDuration": "daily"},
                                        {"maxBudget": 0.1, "budgetDuration": "1h"}]},
                 id="audited-windows"),
    pytest.param("RateLimit", {"rpm": 1, "enforcement": "Audit"}, id="audited-rate-limit"),
]  # fmt: skip

SPECS: dict[str, type[BaseModel]] = {"Budget": BudgetSpec, "RateLimit": RateLimitSpec}


def apply(kube: KubeAPIServer, obj: dict[str, Any]) -> tuple[int, str]:
    applied = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj))
    return applied.returncode, applied.stderr


@pytest.mark.parametrize(("kind", "spec", "field"), REFUSED)
def test_kubectl_apply_refuses_naming_the_field(
    kind: str, spec: dict[str, Any], field: str, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    code, stderr = apply(kube_apiserver, manifest(kind, "hostile", spec, kube_namespace))
    assert code != 0
    assert field in stderr, stderr
    with pytest.raises(ValidationError, match=field):
        SPECS[kind].model_validate(spec)


@pytest.mark.parametrize(("kind", "spec"), ACCEPTED)
def test_the_new_fields_are_accepted(
    kind: str, spec: dict[str, Any], kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    code, stderr = apply(kube_apiserver, manifest(kind, "edge", spec, kube_namespace))
    assert code == 0, stderr
    SPECS[kind].model_validate(spec)


def test_kubectl_get_shows_the_windows_zone_and_enforcement(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    spec = {
        "maxBudget": 5,
        "budgetDuration": "monthly",
        "timeZone": "Europe/Berlin",
        "enforcement": "Audit",
        "windows": [
            {"maxBudget": 1, "budgetDuration": "daily"},
            {"maxBudget": 0.1, "budgetDuration": "1h"},
        ],
    }
    obj = json.dumps(manifest("Budget", "tier", spec, kube_namespace))
    kube_apiserver.kubectl("apply", "-f", "-", input=obj, check=True)
    shown = kube_apiserver.kubectl(
        "get", "budget", "tier", "-n", kube_namespace, "-o", "wide", check=True
    ).stdout.splitlines()
    header, row = shown
    found = list(re.finditer(r"\S+", header))  # columns by position: some are empty
    ends = [match.start() for match in found[1:]] + [len(row)]
    columns = {
        match.group(): row[match.start() : end].strip()
        for match, end in zip(found, ends, strict=True)
    }
    assert columns["DURATION"] == "monthly"
    assert columns["ENFORCEMENT"] == "Audit"
    assert columns["ZONE"] == "Europe/Berlin"
