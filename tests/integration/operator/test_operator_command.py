"""`llmquota operator` as a process: /healthz, /metrics and the sidecar-injection webhook.

The webhook is called directly with an AdmissionReview here; test_operator_webhook.py
goes through the API server with a MutatingWebhookConfiguration like the chart's.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.integration.operator.operator_helpers import Cluster, wait_for

from llmquota.store import EmbeddedRedis

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("webhook-certs")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return directory


class OperatorProcess:
    def __init__(self, health: str, webhook: str, cert_dir: Path) -> None:
        self.health = health
        self.webhook = webhook
        self.context = ssl.create_default_context(cafile=str(cert_dir / "tls.crt"))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.health}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except (urllib.error.URLError, ConnectionError) as error:
            return 0, str(error)

    def review(self, pod: dict[str, Any], namespace: str) -> dict[str, Any]:
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": secrets.token_hex(8),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": namespace,
                "object": pod,
                "userInfo": {"username": "system:admin"},
                "dryRun": False,
            },
        }
        request = urllib.request.Request(
            f"https://{self.webhook}/inject-sidecar",
            data=json.dumps(review).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer


@pytest.fixture(scope="module")
def operator_process(
    kube_apiserver: KubeAPIServer, llmquota_crds: None, namespace: str, cert_dir: Path
) -> Iterator[OperatorProcess]:
    health = f"127.0.0.1:{free_port()}"
    webhook = f"127.0.0.1:{free_port()}"
    log_path = cert_dir / "operator.log"
    with EmbeddedRedis() as redis_server, log_path.open("wb") as log:
        env = {**os.environ, "KUBECONFIG": str(kube_apiserver.kubeconfig)}
        process = subprocess.Popen(
            [sys.executable, "-m", "llmquota.cli", "operator",
             "--redis", redis_server.url, "--namespace", namespace,
             "--health-listen", health, "--webhook-listen", webhook,
             "--webhook-cert-dir", str(cert_dir),
             "--sidecar-image", "llmquota:test", "--upstream", "http://upstream:8000",
             "--upstream-secret", "openai:api-key", "--sidecar-config-map", "pricing",
             "--status-interval", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        started = OperatorProcess(health, webhook, cert_dir)
        try:
            wait_for(lambda: started.get("/healthz")[0] == 200, timeout=30, what="/healthz")
            yield started
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def apply_json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/replace/remove, enough to read what the webhook would do to a Pod."""
    patched: Any = json.loads(json.dumps(document))
    for operation in operations:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]
        ]
        target = patched
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            index = len(target) if last == "-" else int(last)
            if operation["op"] == "add":
                target.insert(index, operation["value"])
            elif operation["op"] == "replace":
                target[index] = operation["value"]
            else:
                del target[index]
        elif operation["op"] == "remove":
            del target[last]
        else:
            target[last] = operation["value"]
    return patched


def test_healthz_and_metrics(
    operator_process: OperatorProcess, kube_apiserver: KubeAPIServer, namespace: str
) -> None:
    cluster = Cluster(kube_apiserver, namespace)
    cluster.apply({"kind": "ApiKey", "metadata": {"name": "metered"}, "spec": {}})
    wait_for(
        lambda: (c := cluster.condition("apikey", "metered", "Ready")) and c["status"] == "True",
        what="metered Ready",
    )
    status, _ = operator_process.get("/healthz")
    assert status == 200
    status, metrics = operator_process.get("/metrics")
    assert status == 200
    assert 'llmquota_reconcile_total{kind="ApiKey",result="ok"}' in metrics
    assert "llmquota_reconcile_duration_seconds_bucket" in metrics
    wait_for(
        lambda: "llmquota_status_sync_seconds_count" in operator_process.get("/metrics")[1],
        what="status sync metric",
    )


def test_webhook_injects_the_sidecar_into_annotated_pods(
    operator_process: OperatorProcess, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "app",
            "namespace": namespace,
            "annotations": {"llmquota.dev/inject": "true"},
        },
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    answer = operator_process.review(pod, namespace)
    response = answer["response"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    patched = apply_json_patch(pod, operations)
    (app,) = patched["spec"]["containers"]
    assert app["env"] == [{"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:4000/v1"}]
    (sidecar,) = patched["spec"]["initContainers"]
    assert sidecar["name"] == "llmquota-sidecar"
    assert sidecar["args"][:3] == ["sidecar", "--listen", "127.0.0.1:4000"]
    assert "--upstream-key-file" in sidecar["args"]
    assert "/var/run/llmquota/upstream/api-key" in sidecar["args"]
    assert [v["name"] for v in patched["spec"]["volumes"]] == [
        "llmquota-identity",
        "llmquota-upstream",
        "llmquota-pricing",
    ]


def test_webhook_leaves_other_pods_alone(operator_process: OperatorProcess, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    response = operator_process.review(pod, namespace)["response"]
    assert response["allowed"] is True
    assert "patch" not in response
