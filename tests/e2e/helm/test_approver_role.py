"""Who may raise a budget: the chart's budget-approver ClusterRole, on the real API server.

A key's owner, who may edit ApiKeys and Teams in their namespace, is refused when they
try to approve an increase for themselves; someone bound to the approver role (the
chart's own template, rendered by helm) may create and delete overrides.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the fixtures provide it
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

OVERRIDE = {
    "apiVersion": "llmquota.dev/v1alpha1",
    "kind": "BudgetOverride",
    "metadata": {"name": "my-own-raise"},
    "spec": {
        "target": {"kind": "ApiKey", "name": "qa-bot"},
        "increase": 1000,
        "expires": "2030-01-01T00:00:00Z",
        "reason": "I want more",
    },
}


@pytest.fixture
def approver_role(kube_apiserver: KubeAPIServer, helm_bin: Path, chart_dir: Path) -> Iterator[str]:
    """The chart's ClusterRoles from approver-rbac.yaml under a release of its own."""
    release = f"lq-{secrets.token_hex(3)}"
    rendered = subprocess.run(
        [str(helm_bin), "template", release, str(chart_dir),
         "--show-only", "templates/approver-rbac.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    kube_apiserver.kubectl("apply", "-f", "-", input=rendered, check=True)
    yield f"{release}-llmquota-budget-approver"
    kube_apiserver.kubectl("delete", "-f", "-", "--wait=false", input=rendered)


def token_for(kube: KubeAPIServer, namespace: str, account: str, role_ref: dict[str, str]) -> str:
    """A ServiceAccount bound to `role_ref` in `namespace`, and a token for it."""
    kube.kubectl("create", "serviceaccount", account, "-n", namespace, check=True)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": account, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", **role_ref},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(binding), check=True)
    created = kube.kubectl("create", "token", account, "-n", namespace, check=True)
    return created.stdout.strip()


def test_a_key_owner_cannot_approve_their_own_increase_but_an_approver_can(
    kube_apiserver: KubeAPIServer, kube_namespace: str, approver_role: str
) -> None:
    key_editor = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "key-editor", "namespace": kube_namespace},
        "rules": [
            {
                "apiGroups": ["llmquota.dev"],
                "resources": ["apikeys", "teams"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ],
    }
    kube_apiserver.kubectl("apply", "-f", "-", input=json.dumps(key_editor), check=True)
    owner = token_for(
        kube_apiserver, kube_namespace, "owner", {"kind": "Role", "name": "key-editor"}
    )
    approver = token_for(
        kube_apiserver, kube_namespace, "approver", {"kind": "ClusterRole", "name": approver_role}
    )
    override = json.dumps(OVERRIDE)

    as_owner = kube_apiserver.kubectl(
        "create", "-n", kube_namespace, "-f", "-", input=override, token=owner
    )
    assert as_owner.returncode != 0
    assert "forbidden" in as_owner.stderr.lower()
    assert "budgetoverrides" in as_owner.stderr
    # The owner does hold their own role: the refusal is about overrides alone.
    can_edit = kube_apiserver.kubectl(
        "auth", "can-i", "patch", "apikeys", "-n", kube_namespace, token=owner
    )
    assert can_edit.stdout.strip() == "yes"

    as_approver = kube_apiserver.kubectl(
        "create", "-n", kube_namespace, "-f", "-", input=override, token=approver
    )
    assert as_approver.returncode == 0, as_approver.stderr
    deleted = kube_apiserver.kubectl(
        "delete", "budgetoverride", "my-own-raise", "-n", kube_namespace, token=approver
    )
    assert deleted.returncode == 0, deleted.stderr
