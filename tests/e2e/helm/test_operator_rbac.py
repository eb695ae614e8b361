"""The operator runs under the chart's own ServiceAccount and RBAC, and needs no more.

The chart is rendered with `helm template` (watching one namespace, so this operator
does not reach into other tests' namespaces), its ServiceAccount, roles and bindings are
applied to the real API server, and `llmquota operator` runs as that ServiceAccount with
a token minted by the API server. It must reconcile an ApiKey end to end (generate its
Secret, write its policy, patch its status, record Events); the same token must be
refused what the roles do not grant.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import yaml
from tests.support.waiting import WaitTimeoutError, wait_until_sync

from llmquota.store import EmbeddedRedis

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
DEADLINE_S = 60.0


def _wait_for(probe: Callable[[], Any], what: str, log: Path) -> Any:
    try:
        return wait_until_sync(probe, DEADLINE_S, poll_s=0.1, what=what)
    except WaitTimeoutError as timeout:
        pytest.fail(f"{timeout}; operator log:\n{log.read_text()[-4000:]}")


def _render(helm: Path, chart: Path, release: str, home: str, watched: str) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [
            str(helm), "template", release, str(chart),
            "--namespace", home,
            "--set", f"operator.watchNamespaces={{{watched}}}",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


class ChartIdentity:
    """The chart's operator identity on the test bed: namespaces, RBAC, a token."""

    def __init__(self, kube: KubeAPIServer, documents: list[dict[str, Any]], home: str) -> None:
        self.kube = kube
        self.documents = documents
        self.home = home
        self.deployment = next(doc for doc in documents if doc["kind"] == "Deployment")

    def apply(self, *kinds: str) -> None:
        chosen = [doc for doc in self.documents if doc["kind"] in kinds]
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": chosen})
        self.kube.kubectl("apply", "-f", "-", input=listed, check=True)

    def token(self) -> str:
        account = self.deployment["spec"]["template"]["spec"]["serviceAccountName"]
        minted = self.kube.kubectl(
            "create", "token", account, "-n", self.home, "--duration=1h", check=True
        )
        return minted.stdout.strip()

    def operator_args(self, redis_url: str) -> list[str]:
        """The chart's operator arguments, with listeners and Redis for this machine."""
        container = self.deployment["spec"]["template"]["spec"]["containers"][0]
        kept = [
            arg
            for arg in container["args"]
            if arg.startswith(("--peering=", "--namespace=", "--sidecar-"))
        ]
        return [*kept, f"--redis={redis_url}", "--health-listen=127.0.0.1:0", "--status-interval=1"]


def _kubeconfig(kube: KubeAPIServer, token: str, path: Path) -> Path:
    cluster: dict[str, Any] = {"server": kube.server}
    if kube.ca_file is not None:
        cluster["certificate-authority"] = str(kube.ca_file)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "testbed", "cluster": cluster}],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": "testbed", "user": "operator"}}
                ],
                "current-context": "operator",
            }
        )
    )
    return path


@pytest.fixture
def chart_identity(
    kube_apiserver: KubeAPIServer, helm_bin: Path, chart_dir: Path
) -> Iterator[tuple[ChartIdentity, str]]:
    suffix = secrets.token_hex(3)
    home, watched = f"lq-system-{suffix}", f"lq-team-{suffix}"
    for namespace in (home, watched):
        kube_apiserver.kubectl("create", "namespace", namespace, check=True)
    identity = ChartIdentity(
        kube_apiserver, _render(helm_bin, chart_dir, f"lq{suffix}", home, watched), home
    )
    # Peering CRDs first (the chart installs them with the others), then roles, then the
    # KopfPeering the chart creates in a post-install hook.
    identity.apply("CustomResourceDefinition")
    kube_apiserver.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev", check=True,
    )  # fmt: skip
    identity.apply(*RBAC_KINDS, "KopfPeering")
    yield identity, watched
    cluster_scoped = [
        f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        for doc in identity.documents
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")
    ]
    kube_apiserver.kubectl("delete", "--wait=false", *cluster_scoped)
    for namespace in (home, watched):
        kube_apiserver.kubectl("delete", "namespace", namespace, "--wait=false")


def test_operator_reconciles_under_the_charts_rbac_and_no_more(
    kube_apiserver: KubeAPIServer,
    chart_identity: tuple[ChartIdentity, str],
    tmp_path: Path,
) -> None:
    identity, watched = chart_identity
    token = identity.token()
    kubeconfig = _kubeconfig(kube_apiserver, token, tmp_path / "operator.kubeconfig")
    log = tmp_path / "operator.log"
    with EmbeddedRedis(tmp_path / "redis") as redis_server, log.open("wb") as output:
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmquota.cli",
                "operator",
                *identity.operator_args(redis_server.url),
            ],
            env={
                "KUBECONFIG": str(kubeconfig),
                "POD_NAMESPACE": identity.home,
                "PATH": "/usr/bin:/bin",
            },
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            manifests = [
                {"kind": "Team", "metadata": {"name": "qa"}, "spec": {"budget": {"maxBudget": 5}}},
                {"kind": "ApiKey", "metadata": {"name": "qa-bot"}, "spec": {"team": "qa"}},
            ]
            items = [{"apiVersion": "llmquota.dev/v1alpha1", **doc} for doc in manifests]
            kube_apiserver.kubectl(
                "apply", "-n", watched, "-f", "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                check=True,
            )  # fmt: skip

            def ready_key() -> dict[str, Any] | None:
                got = kube_apiserver.kubectl("get", "-n", watched, "apikey", "qa-bot", "-o", "json")
                status = json.loads(got.stdout).get("status", {}) if got.returncode == 0 else {}
                ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
                return status if ready and ready[0]["status"] == "True" else None

            status = _wait_for(ready_key, "the ApiKey to be Ready", log)
            assert status["keyHint"].startswith("sk-...")
            client = redis.Redis.from_url(redis_server.url)
            try:
                assert _wait_for(lambda: client.smembers("llmquota:policies"), "a policy", log)
            finally:
                client.close()
            secret = kube_apiserver.kubectl("get", "-n", watched, "secret", "qa-bot", "-o", "json")
            assert secret.returncode == 0, "the operator generated the key's Secret"
            team = _wait_for(
                lambda: (
                    json.loads(
                        kube_apiserver.kubectl(
                            "get", "-n", watched, "team", "qa", "-o", "json"
                        ).stdout
                    )
                    .get("status", {})
                    .get("keys")
                ),
                "the team's status",
                log,
            )
            assert team == 1
            assert operator.poll() is None, log.read_text()[-4000:]
            assert "Forbidden" not in log.read_text(), log.read_text()[-4000:]
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()

    # What the roles do not grant is refused, with the same token.
    for outside in (
        ("get", "secrets", "-n", "default"),
        ("create", "deployment", "intruder", "--image=busybox", "-n", watched),
        ("delete", "namespace", watched),
        ("get", "pods", "--all-namespaces"),
    ):
        refused = kube_apiserver.kubectl(*outside, token=token)
        assert refused.returncode != 0, outside
        assert "forbidden" in refused.stderr.lower(), refused.stderr
