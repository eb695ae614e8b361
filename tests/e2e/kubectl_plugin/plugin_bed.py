"""The plugin run as a subprocess against the test bed, and Teams, ApiKeys and Budgets
whose statuses are patched as the operator writes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

PLUGIN = Path(sys.executable).parent / "kubectl-llmquota"
"""The console script, installed beside the interpreter that runs the tests."""

MANIFESTS = """\
apiVersion: llmquota.dev/v1alpha1
kind: Budget
metadata: {name: free-tier}
spec: {maxBudget: 10, budgetDuration: 1d}
---
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: qa}
spec:
  budget: {maxBudget: 100, budgetDuration: 30d}
  models: [gpt-4o-mini, llama3]
  members:
    - {user: ishaan, maxBudgetInTeam: 50}
---
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: research}
spec:
  budgetRef: {name: free-tier}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: qa-bot}
spec:
  team: qa
  user: ishaan
  models: [gpt-4o-mini]
  budget: {maxBudget: 40, budgetDuration: 30d}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: chatty}
spec:
  budget: {maxBudget: 5, budgetDuration: 1d}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: lab}
spec: {team: research}
"""


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-01T00:00:00Z",
    }


def status_of(
    spend: float,
    max_budget: float | None,
    reset_in: timedelta,
    *,
    exceeded: Mapping[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A status as the operator's status sync writes it."""
    reset_at = (datetime.now(UTC) + reset_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    over = exceeded is not None or (max_budget is not None and spend >= max_budget)
    reason = (exceeded or {}).get("reason", "BudgetExhausted" if over else "WithinBudget")
    message = (exceeded or {}).get("message", f"spend {spend:g} USD of maxBudget {max_budget} USD")
    return {
        "spend": spend,
        "maxBudget": max_budget,
        "remaining": None if max_budget is None else max(0.0, max_budget - spend),
        "budgetResetAt": reset_at,
        "conditions": [
            condition("Ready", "True", "Applied"),
            condition("BudgetExceeded", "True" if over else "False", reason, message),
        ],
        **extra,
    }


@dataclass
class PluginRunner:
    """Runs the plugin against the test bed with KUBECONFIG set, as kubectl would."""

    kube: KubeAPIServer
    namespace: str

    def env(self, **overrides: str) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kube.kubeconfig), **overrides}

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, namespace: bool = True
    ) -> subprocess.CompletedProcess[str]:
        scope = ["-n", self.namespace] if namespace else []
        return subprocess.run(
            [str(PLUGIN), *args, *scope],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=dict(env) if env is not None else self.env(),
        )

    def ok(self, *args: str, namespace: bool = True) -> str:
        result = self(*args, namespace=namespace)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        """Write a status through the status subresource, as the operator does."""
        self.kube.kubectl(
            "patch", plural, name, "-n", self.namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}), check=True,
        )  # fmt: skip


def apply(kube: KubeAPIServer, namespace: str, manifests: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifests, check=True)


def seed(plugin: PluginRunner) -> None:
    """The objects of MANIFESTS with statuses: team qa exhausted, chatty spent most."""
    apply(plugin.kube, plugin.namespace, MANIFESTS)
    plugin.patch_status(
        "teams",
        "qa",
        status_of(
            100, 100, timedelta(hours=14, minutes=30),
            modelSpend={"gpt-4o-mini": 70, "llama3": 30},
            memberSpend={"ishaan": 20}, keys=1,
        ),
    )  # fmt: skip
    plugin.patch_status(
        "teams", "research", status_of(2, 10, timedelta(hours=4), modelSpend={"gpt-4o": 2})
    )
    plugin.patch_status(
        "apikeys",
        "qa-bot",
        status_of(20, 40, timedelta(days=20), modelSpend={"gpt-4o-mini": 20}, keyHint="sk-...a1b2"),
    )
    plugin.patch_status("apikeys", "chatty", status_of(4.5, 5, timedelta(hours=2)))
    plugin.patch_status("apikeys", "lab", status_of(2, None, timedelta(hours=3)))
