"""Removing llmquota in the documented order (operator first, then CRDs or namespaces)
completes: nothing is left Terminating waiting for an operator that is gone.

These tests delete CRDs, so they run against an API server of their own, never the
session's shared one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.integration.operator.operator_helpers import Cluster, operator_running, wait_for
from tests.support.kube_apiserver import (
    REPO_ROOT,
    KubeAPIServer,
    find_binaries,
    run_kube_apiserver,
)

from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

REMOVAL_DEADLINE_S = 60
CRDS = sorted((REPO_ROOT / "crds").glob("*.yaml"))


@pytest.fixture(scope="module")
def own_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """An API server (with kube-controller-manager, for namespace deletion) of our own."""
    binaries = find_binaries()
    if binaries is None or binaries.kube_controller_manager is None:
        if os.environ.get("LLMQUOTA_ALLOW_NO_TESTBED") == "1":
            pytest.skip("no test bed binaries (LLMQUOTA_ALLOW_NO_TESTBED=1)")
        pytest.fail("no test bed binaries with kube-controller-manager: run `make testbed`")
    with run_kube_apiserver(binaries, workdir=tmp_path_factory.mktemp("own-apiserver")) as kube:
        yield kube


def install_crds(kube: KubeAPIServer) -> None:
    files = [arg for path in CRDS for arg in ("-f", str(path))]
    kube.kubectl("apply", "--server-side", "--force-conflicts", *files, check=True)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *files, check=True)


def populate(kube: KubeAPIServer, namespace: str, redis_url: str) -> None:
    """Every kind, reconciled by a running operator, which is then stopped."""
    kube.kubectl("create", "namespace", namespace, check=True)
    cluster = Cluster(kube, namespace)
    with operator_running(kube, namespace, redis_url):
        cluster.apply(
            {"kind": "Budget", "metadata": {"name": "tier"}, "spec": {"maxBudget": 10}},
            {"kind": "RateLimit", "metadata": {"name": "std"}, "spec": {"rpm": 60}},
            {
                "kind": "Team",
                "metadata": {"name": "qa"},
                "spec": {"budgetRef": {"name": "tier"}, "rateLimitRef": {"name": "std"}},
            },
            {
                "kind": "ApiKey",
                "metadata": {"name": "bot"},
                "spec": {"team": "qa", "budget": {"maxBudget": 1}},
            },
            {
                "kind": "BudgetOverride",
                "metadata": {"name": "launch"},
                "spec": {
                    "target": {"kind": "ApiKey", "name": "bot"},
                    "increase": 5,
                    "expires": (datetime.now(UTC) + timedelta(hours=1)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    ),
                    "reason": "removal test",
                },
            },
        )
        wait_for(
            lambda: (cluster.get("budgetoverride", "launch") or {}).get("status", {}).get("active"),
            timeout=30,
            what="the BudgetOverride active",
        )
        for kind, name in (("apikey", "bot"), ("team", "qa"), ("budget", "tier")):
            wait_for(
                functools.partial(is_ready, cluster, kind, name),
                timeout=30,
                what=f"{kind} {name} Ready",
            )


def is_ready(cluster: Cluster, kind: str, name: str) -> bool:
    condition = cluster.condition(kind, name, "Ready")
    return condition is not None and condition["status"] == "True"


def test_namespace_deletion_completes_with_the_operator_gone(
    own_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    install_crds(own_apiserver)
    with EmbeddedRedis() as redis_server:
        populate(own_apiserver, "removal-ns", redis_server.url)
    deleted = own_apiserver.kubectl(
        "delete", "namespace", "removal-ns", f"--timeout={REMOVAL_DEADLINE_S}s"
    )
    assert deleted.returncode == 0, deleted.stderr
    gone = own_apiserver.kubectl("get", "namespace", "removal-ns")
    assert gone.returncode != 0


def test_crd_deletion_completes_with_the_operator_gone(own_apiserver: KubeAPIServer) -> None:
    install_crds(own_apiserver)
    with EmbeddedRedis() as redis_server:
        populate(own_apiserver, "removal-crd", redis_server.url)
    crds = ["teams.llmquota.dev", "apikeys.llmquota.dev", "budgets.llmquota.dev",
            "ratelimits.llmquota.dev", "budgetoverrides.llmquota.dev"]  # fmt: skip
    deleted = own_apiserver.kubectl("delete", "crd", *crds, f"--timeout={REMOVAL_DEADLINE_S}s")
    assert deleted.returncode == 0, deleted.stderr
    left = own_apiserver.kubectl("get", "crd", *crds)
    assert left.returncode != 0
    assert "NotFound" in left.stderr
