"""Keyless budgets on a real node: Pods matched by a Team's workloadSelector need no ApiKey.

Two Deployments under one Team, each with its own counter of the Team's
workloadBudgetRef: the first runs out of its workload budget (402) while the second is
still served; a Pod with the same labels in another namespace is refused (401); the Team's
status and the sidecar's metrics name the workloads, never the Pods.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.cluster.conftest import Installed
from tests.cluster.workloads import (
    SIDECAR,
    apply,
    get_json,
    keyless_deployment,
    namespace,
    rolled_out_pod,
    run_client,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

KEYLESS = "keyless"
ELSEWHERE = "keyless-elsewhere"
LABELS = {"llm-team": "support"}
GROUP = "llmquota.dev/v1alpha1"


def _team_and_budget() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": GROUP,
            "kind": "Budget",
            "metadata": {"name": "per-workload", "namespace": KEYLESS},
            # One nano-dollar a day per workload: its first request is served, the next not.
            "spec": {"maxBudget": 0.000000001, "budgetDuration": "1d"},
        },
        {
            "apiVersion": GROUP,
            "kind": "Team",
            "metadata": {"name": "support", "namespace": KEYLESS},
            "spec": {
                "budget": {"maxBudget": 100, "budgetDuration": "1d"},
                "workloadSelector": {"matchLabels": LABELS},
                "workloadBudgetRef": {"name": "per-workload"},
            },
        },
    ]


def _scraped(installed: Installed, pod: str, namespace_name: str) -> str:
    pod_ip = get_json(installed.api, "pod", "-n", namespace_name, pod)["status"]["podIP"]
    status, body = installed.cluster.http_get(f"http://{pod_ip}:4001/metrics")
    assert status == 200, body
    return body


def test_two_deployments_under_one_team_have_their_own_workload_budgets(
    installed: Installed,
) -> None:
    api = installed.api
    apply(api, namespace(KEYLESS), namespace(ELSEWHERE), *_team_and_budget())
    wait_for(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (get_json(api, "team", "-n", KEYLESS, "support").get("status") or {}).get(
                "conditions", []
            )
        ),
        "the Team Ready",
    )
    apply(
        api,
        keyless_deployment(KEYLESS, "drafter", installed.image, LABELS),
        keyless_deployment(KEYLESS, "summarizer", installed.image, LABELS),
        keyless_deployment(ELSEWHERE, "drafter", installed.image, LABELS),
    )
    drafter = rolled_out_pod(api, KEYLESS, "drafter")
    summarizer = rolled_out_pod(api, KEYLESS, "summarizer")
    stranger = rolled_out_pod(api, ELSEWHERE, "drafter")

    # The drafter's own workload budget runs out ...
    assert run_client(api, KEYLESS, drafter, "-", "-")["statuses"] == [200, 402]
    # ... the summarizer, same Team, same labels, has a counter of its own.
    assert run_client(api, KEYLESS, summarizer, "-")["statuses"] == [200]
    # The same labels in another namespace match nothing: no key, no Team.
    assert run_client(api, ELSEWHERE, stranger, "-")["statuses"] == [401]

    def workload_spend() -> dict[str, float]:
        status = get_json(api, "team", "-n", KEYLESS, "support").get("status") or {}
        spend: dict[str, float] = status.get("workloadSpend") or {}
        return spend

    wait_for(lambda: len(workload_spend()) == 2, "status.workloadSpend of both Deployments")
    assert set(workload_spend()) == {"deployment/drafter", "deployment/summarizer"}

    logs = api.kubectl("logs", "-n", KEYLESS, drafter, "-c", SIDECAR).stdout
    refusals = [
        json.loads(line)
        for line in logs.splitlines()
        if line.startswith("{") and "budget_exceeded" in line
    ]
    assert refusals, logs[-2000:]

    metrics = _scraped(installed, drafter, KEYLESS)
    served = [
        line
        for line in metrics.splitlines()
        if line.startswith("llmquota_requests_total{") and 'outcome="served"' in line
    ]
    assert served, metrics[-2000:]
    assert all('workload="deployment/drafter"' in line for line in served), served
    assert drafter not in metrics
