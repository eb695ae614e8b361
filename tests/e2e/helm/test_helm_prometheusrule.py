"""The chart's PrometheusRule (off by default) and the dashboard's forecast and
per-workload panels.

kubernetes-validate knows no PrometheusRule, so its structure is checked here against
the Prometheus Operator's schema: groups of named rules, each an alert with an
expression, a `for` duration, labels and annotations, all strings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helm.test_helm_chart import RELEASE, VALUES_DIR, find, helm_template, one, render

pytestmark = pytest.mark.e2e

DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                      r"(([0-9]+)s)?(([0-9]+)ms)?)$")  # fmt: skip
"""The Prometheus Operator CRD's pattern for `for`."""
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _check_structure(rule_object: dict[str, Any]) -> list[dict[str, Any]]:
    """The PrometheusRule's rules, after checking the CRD's structure."""
    assert rule_object["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule_object["spec"]) == {"groups"}
    rules = []
    names = [group["name"] for group in rule_object["spec"]["groups"]]
    assert len(names) == len(set(names))
    for group in rule_object["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "partial_response_strategy", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule
            assert ("alert" in rule) != ("record" in rule)
            assert isinstance(rule["expr"], str)
            assert DURATION.match(rule.get("for", "0")), rule.get("for")
            for key in ("labels", "annotations"):
                assert all(isinstance(value, str) for value in rule.get(key, {}).values())
            rules.append(rule)
    return rules


def test_off_by_default(helm_bin: Path, chart_dir: Path) -> None:
    assert not find(render(helm_bin, chart_dir), "PrometheusRule")


def test_budget_at_risk_alert(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "prometheus-rule.yaml")
    rule_object = one(manifests, "PrometheusRule", f"{RELEASE}-llmquota")
    assert rule_object["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (alert,) = _check_structure(rule_object)
    assert alert["alert"] == "LLMQuotaBudgetAtRisk"
    assert alert["expr"].strip() == (
        "min by (namespace, kind, name) (llmquota_budget_exhausts_in_seconds) < 14400"
    )
    assert alert["for"] == "30m"
    assert alert["labels"] == {"severity": "critical"}
    # Prometheus's templates reach Prometheus, not Helm.
    assert "{{ $labels.namespace }}/{{ $labels.name }}" in alert["annotations"]["summary"]
    assert "{{ $value | humanizeDuration }}" in alert["annotations"]["summary"]
    assert "kubectl llmquota why" in alert["annotations"]["description"]


def test_defaults_of_the_alert(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, set_values=("prometheusRule.enabled=true",))
    (alert,) = _check_structure(one(manifests, "PrometheusRule"))
    assert alert["expr"].strip().endswith("< 86400")
    assert (alert["for"], alert["labels"]["severity"]) == ("15m", "warning")


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("prometheusRule.budgetAtRisk.exhaustsWithinSeconds=0", "exhaustsWithinSeconds"),
        ("prometheusRule.budgetAtRisk.for=soon", "for"),
        ("prometheusRule.threshold=1", "threshold"),
    ],
)
def test_schema_refuses_bad_values(
    helm_bin: Path, chart_dir: Path, assignment: str, message: str
) -> None:
    result = helm_template(
        helm_bin, chart_dir, set_values=("prometheusRule.enabled=true", assignment)
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_dashboard_has_forecast_and_workload_panels(chart_dir: Path) -> None:
    dashboard = json.loads((chart_dir / "dashboards" / "llmquota.json").read_text())
    expressions = {
        panel["title"]: target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    forecast = expressions["Budget exhausts in (forecast)"]
    assert "llmquota_budget_exhausts_in_seconds" in forecast
    workload = expressions["Spend by workload (USD / hour)"]
    assert workload.startswith("sum by (namespace, workload) (rate(llmquota_spend_usd_total{")
    assert "llmquota_budget_exhausts_in_seconds" in expressions["Soonest to run out"]
    # Panels do not overlap on Grafana's 24-column grid.
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
