"""The sidecar-injection webhook through the real API server, and the mirrored configuration.

`llmquota operator` runs as a process with its webhook on https://127.0.0.1 (a
self-signed certificate made here with openssl); a MutatingWebhookConfiguration like the
chart's, limited to this test's workload namespace, points the API server at
`/inject-sidecar`. Pods are created with `kubectl create`: no kubelet runs, so they stay
Pending, but what the API server stored is what a kubelet would start. The sidecar's
ConfigMap and credential Secret live in a namespace of their own (the operator's, in a
cluster) and must be mirrored into the Pod's namespace, where the Pod can mount them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from tests.integration.operator.operator_helpers import Cluster, wait_for

from llmquota.store import EmbeddedRedis

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

CONFIG_MAP = "llmquota-sidecar"
SECRET = "openai"
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Bed:
    """The namespaces of one run: the operator's (`home`) and a workload's."""

    home: Cluster
    workload: Cluster
    log: Path


def _certificate(directory: Path) -> Path:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return directory / "tls.crt"


def _webhook_configuration(name: str, port: int, ca: Path, workload: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "inject-sidecar.llmquota.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "NoneOnDryRun",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/inject-sidecar",
                    "caBundle": base64.b64encode(ca.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                # Only this test's namespace: other tests' Pods never reach this operator.
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": workload},
                },
            }
        ],
    }


def _source_objects(home: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": home},
            "data": {
                "pricing.yaml": "gpt-4o-mini: {input: 0.15, output: 0.6}\n",
                "fail-open": "true",
                "resources.yaml": yaml.safe_dump(RESOURCES),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": home},
            "stringData": {"api-key": "sk-upstream-1", "unrelated": "not mirrored"},
        },
    ]


@pytest.fixture(scope="module")
def bed(
    kube_apiserver: KubeAPIServer,
    llmquota_crds: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Bed]:
    suffix = secrets.token_hex(3)
    home, workload = f"op-webhook-home-{suffix}", f"op-webhook-apps-{suffix}"
    for name in (home, workload):
        kube_apiserver.kubectl("create", "namespace", name, check=True)
    directory = tmp_path_factory.mktemp("webhook")
    ca = _certificate(directory)
    listing = {"apiVersion": "v1", "kind": "List", "items": _source_objects(home)}
    kube_apiserver.kubectl("apply", "-f", "-", input=json.dumps(listing), check=True)
    port = free_port()
    log = directory / "operator.log"
    configuration = _webhook_configuration(f"llmquota-test-{suffix}", port, ca, workload)
    with EmbeddedRedis() as redis_server, log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmquota.cli", "operator",
             "--redis", redis_server.url, "--namespace", workload,
             "--health-listen", f"127.0.0.1:{free_port()}",
             "--webhook-listen", f"127.0.0.1:{port}", "--webhook-cert-dir", str(directory),
             "--sidecar-image", "llmquota:test", "--upstream", "http://upstream:8000",
             "--upstream-secret", f"{SECRET}:api-key", "--sidecar-config-map", CONFIG_MAP,
             "--status-interval", "0.5"],
            env={**os.environ, "KUBECONFIG": str(kube_apiserver.kubeconfig),
                 "POD_NAMESPACE": home},
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(lambda: _listening(port), timeout=30, what="the webhook server")
            kube_apiserver.kubectl("apply", "-f", "-", input=json.dumps(configuration), check=True)
            # Pods need the namespace's default ServiceAccount (the controller manager's).
            wait_for(
                lambda: (
                    kube_apiserver.kubectl("-n", workload, "get", "sa", "default").returncode == 0
                ),
                what="the default ServiceAccount",
            )
            yield Bed(Cluster(kube_apiserver, home), Cluster(kube_apiserver, workload), log)
        finally:
            kube_apiserver.kubectl(
                "delete", "mutatingwebhookconfiguration", configuration["metadata"]["name"]
            )
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for name in (home, workload):
                kube_apiserver.kubectl("delete", "namespace", name, "--wait=false")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _create_pod(bed: Bed, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    try:
        bed.workload.kubectl("create", "-f", "-", input=json.dumps(pod))
    except AssertionError as error:
        pytest.fail(f"{error}\noperator log:\n{bed.log.read_text()[-4000:]}")
    stored = bed.workload.get("pod", name)
    assert stored is not None
    return stored


def test_annotated_pod_is_stored_with_the_sidecar(bed: Bed) -> None:
    pod = _create_pod(bed, "app", {"llmquota.dev/inject": "true"})
    spec = pod["spec"]
    # A native sidecar: an init container that keeps running.
    (app,) = spec["containers"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "llmquota-sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:4000/v1"} in app["env"]
    assert sidecar["image"] == "llmquota:test"
    assert sidecar["args"][:3] == ["sidecar", "--listen", "127.0.0.1:4000"]
    # fail-open and resources come from the sidecar ConfigMap, not from flags.
    assert "--fail-open" in sidecar["args"]
    assert sidecar["resources"] == RESOURCES
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["llmquota-upstream"]["secret"]["secretName"] == SECRET
    assert volumes["llmquota-pricing"]["configMap"]["name"] == CONFIG_MAP
    ours = {"llmquota-upstream", "llmquota-pricing"}
    assert ours <= {m["name"] for m in sidecar["volumeMounts"]}
    # The app container never sees the upstream credential.
    assert not {m["name"] for m in app.get("volumeMounts", [])} & ours


def test_volumes_of_an_injected_pod_exist_in_its_namespace(bed: Bed) -> None:
    _create_pod(bed, "mounted", {"llmquota.dev/inject": "true"})
    config_map = wait_for(lambda: bed.workload.get("configmap", CONFIG_MAP), what="the copy")
    secret = wait_for(lambda: bed.workload.get("secret", SECRET), what="the Secret's copy")
    source = bed.home.get("configmap", CONFIG_MAP)
    assert source is not None
    assert config_map["data"] == source["data"]
    # Only the credential's own key is copied.
    assert base64.b64decode(secret["data"]["api-key"]) == b"sk-upstream-1"
    assert "unrelated" not in secret["data"]
    for copy in (config_map, secret):
        metadata = copy["metadata"]
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "llmquota"
        assert "ownerReferences" not in metadata  # garbage collection leaves it


def test_copies_follow_their_sources(bed: Bed) -> None:
    _create_pod(bed, "follower", {"llmquota.dev/inject": "true"})
    wait_for(lambda: bed.workload.get("secret", SECRET), what="the Secret's copy")
    bed.home.kubectl(
        "patch", "secret", SECRET, "--type=merge", "-p",
        json.dumps({"stringData": {"api-key": "sk-upstream-2"}}),
    )  # fmt: skip
    bed.home.kubectl(
        "patch", "configmap", CONFIG_MAP, "--type=merge", "-p",
        json.dumps({"data": {"fail-open": "false"}}),
    )  # fmt: skip

    def rotated() -> bool:
        copy = bed.workload.get("secret", SECRET) or {}
        return base64.b64decode(copy.get("data", {}).get("api-key", "")) == b"sk-upstream-2"

    wait_for(rotated, what="the rotated credential in the copy")
    wait_for(
        lambda: (
            (bed.workload.get("configmap", CONFIG_MAP) or {}).get("data", {}).get("fail-open")
            == "false"
        ),
        what="the ConfigMap's change in the copy",
    )
    sidecar = _create_pod(bed, "after-change", {"llmquota.dev/inject": "true"})["spec"][
        "initContainers"
    ][0]
    assert "--fail-open" not in sidecar["args"]


def test_unannotated_pod_is_untouched(bed: Bed) -> None:
    pod = _create_pod(bed, "plain", {})
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]
    assert "env" not in pod["spec"]["containers"][0]
    assert not any(v["name"].startswith("llmquota-") for v in pod["spec"].get("volumes", []))


def _workload_arg(pod: dict[str, Any]) -> str:
    (sidecar,) = pod["spec"]["initContainers"]
    args: list[str] = sidecar["args"]
    return args[args.index("--workload") + 1]


def _created(bed: Bed, manifest: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stored it (a controller may remove it right after)."""
    stored: dict[str, Any] = json.loads(
        bed.workload.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest))
    )
    return stored


def _owned_pod(
    bed: Bed, name: str, owner: dict[str, Any], labels: dict[str, str]
) -> dict[str, Any]:
    reference = {
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": True,
    }  # fmt: skip
    return _created(
        bed,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"llmquota.dev/inject": "true"},
                "ownerReferences": [reference],
            },
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        },
    )


def test_the_sidecar_knows_its_pod_from_the_downward_api_and_its_workload(bed: Bed) -> None:
    pod = _create_pod(bed, "bare", {"llmquota.dev/inject": "true"})
    (sidecar,) = pod["spec"]["initContainers"]
    assert _workload_arg(pod) == "pod/bare"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["llmquota-identity"]["downwardAPI"]["items"] == [
        {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
    ]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["llmquota-identity"]["mountPath"] == "/var/run/llmquota/identity"
    (app,) = pod["spec"]["containers"]
    assert "llmquota-identity" not in {m["name"] for m in app.get("volumeMounts", [])}


def test_a_replicaset_pod_is_its_deployment_and_a_cronjob_job_pod_its_cronjob(bed: Bed) -> None:
    labels = {"app": "chatbot", "pod-template-hash": "5c7d9f"}
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}  # fmt: skip
    replica_set = _created(
        bed,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "chatbot-5c7d9f"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": template,
            },
        },
    )
    pod = _owned_pod(bed, "chatbot-5c7d9f-abcde", replica_set, labels)
    assert _workload_arg(pod) == "deployment/chatbot"

    containers = [{"name": "app", "image": "app:1"}]
    job_spec = {"template": {"spec": {"restartPolicy": "Never", "containers": containers}}}
    cronjob = _created(
        bed,
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {"spec": job_spec}},
        },
    )
    reference = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
                 "uid": cronjob["metadata"]["uid"], "controller": True}  # fmt: skip
    job = _created(
        bed,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "nightly-29000000", "ownerReferences": [reference]},
            "spec": {"suspend": True, **job_spec},
        },
    )
    pod = _owned_pod(bed, "nightly-29000000-xyz12", job, {})
    assert _workload_arg(pod) == "cronjob/nightly"
