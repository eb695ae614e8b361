"""The sidecar injection of the mutating webhook, as a pure function."""

from __future__ import annotations

from typing import Any

from llmquota.operator.config import SidecarConfig
from llmquota.operator.injection import SIDECAR_NAME, injected_spec, pod_workload, wants_injection
from llmquota.policy.identity import OwnerRef

CONFIG = SidecarConfig(
    image="ghcr.io/llmquota/llmquota:0.1.0",
    redis_url="redis://:hunter2@redis:6379/0",
    redis_secret="llmquota-redis",
    redis_secret_key="url",
    upstream="https://api.openai.com",
    upstream_secret="openai",
    upstream_secret_key="api-key",
    pricing_config_map="llmquota-pricing",
    fail_open=True,
)
POD_SPEC = {
    "initContainers": [{"name": "migrate", "image": "app:1"}],
    "containers": [
        {"name": "app", "image": "app:1", "env": [{"name": "OPENAI_BASE_URL", "value": "x"}]}
    ],
    "volumes": [{"name": "data", "emptyDir": {}}],
}


def _sidecar(injected: dict[str, Any]) -> dict[str, Any]:
    (sidecar,) = [c for c in injected["initContainers"] if c["name"] == SIDECAR_NAME]
    assert isinstance(sidecar, dict)
    return sidecar


def test_only_annotated_pods_want_injection() -> None:
    assert wants_injection({"llmquota.dev/inject": "true"})
    assert not wants_injection({"llmquota.dev/inject": "false"})
    assert not wants_injection({})


def test_sidecar_volumes_and_base_url_are_added() -> None:
    injected = injected_spec(POD_SPEC, CONFIG)
    assert injected is not None
    (app,) = injected["containers"]
    sidecar = _sidecar(injected)
    assert app["env"] == [{"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:4000/v1"}]
    assert sidecar["image"] == CONFIG.image
    assert sidecar["args"] == [
        "sidecar",
        "--listen",
        "127.0.0.1:4000",
        "--health-listen",
        "0.0.0.0:4001",
        "--upstream",
        "https://api.openai.com",
        "--upstream-key-file",
        "/var/run/llmquota/upstream/api-key",
        "--fail-open",
        "--pricing",
        "/etc/llmquota/pricing.yaml",
    ]
    assert [v["name"] for v in injected["volumes"]] == [
        "data",
        "llmquota-upstream",
        "llmquota-pricing",
    ]
    assert injected["volumes"][1]["secret"]["secretName"] == "openai"
    # The app containers never see the upstream credential.
    assert "volumeMounts" not in app


def test_sidecar_is_a_native_sidecar_that_starts_first() -> None:
    """An init container that keeps running: the app (and a Job) never waits on it to exit."""
    injected = injected_spec(POD_SPEC, CONFIG)
    assert injected is not None
    assert [c["name"] for c in injected["initContainers"]] == [SIDECAR_NAME, "migrate"]
    assert _sidecar(injected)["restartPolicy"] == "Always"
    assert [c["name"] for c in injected["containers"]] == ["app"]


def test_probes_reach_the_health_port_on_the_pod_ip() -> None:
    """The kubelet probes from the node: no `host: 127.0.0.1`, the port that listens on 0.0.0.0."""
    injected = injected_spec(POD_SPEC, CONFIG)
    assert injected is not None
    sidecar = _sidecar(injected)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = sidecar[probe]["httpGet"]
        assert "host" not in http_get
        assert http_get["port"] == "llmquota-health"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["ports"] == [
        {"name": "llmquota-health", "containerPort": 4001, "protocol": "TCP"}
    ]


def test_redis_url_comes_from_a_secret_never_an_argument() -> None:
    """A password in the URL must not show in the Pod spec or the process list."""
    injected = injected_spec(POD_SPEC, CONFIG)
    assert injected is not None
    sidecar = _sidecar(injected)
    assert not any("redis" in arg for arg in sidecar["args"])
    assert "hunter2" not in repr(injected)
    assert {
        "name": "LLMQUOTA_REDIS",
        "valueFrom": {"secretKeyRef": {"name": "llmquota-redis", "key": "url"}},
    } in sidecar["env"]


def test_without_a_secret_the_redis_url_is_an_environment_variable() -> None:
    injected = injected_spec(POD_SPEC, SidecarConfig(image="i", redis_url="redis://r"))
    assert injected is not None
    sidecar = _sidecar(injected)
    assert {"name": "LLMQUOTA_REDIS", "value": "redis://r"} in sidecar["env"]
    assert "redis://r" not in sidecar["args"]


def test_injection_is_idempotent() -> None:
    injected = injected_spec(POD_SPEC, CONFIG)
    assert injected is not None
    assert injected_spec({**POD_SPEC, **injected}, CONFIG) is None


def test_a_pod_with_the_sidecar_among_its_containers_is_left_alone() -> None:
    """Injected by an older operator (a plain container): not injected twice."""
    spec = {"containers": [{"name": "app"}, {"name": SIDECAR_NAME}]}
    assert injected_spec(spec, CONFIG) is None


def test_minimal_config_has_no_optional_volumes_or_flags() -> None:
    injected = injected_spec(POD_SPEC, SidecarConfig(image="i", redis_url="redis://r"))
    assert injected is not None
    assert _sidecar(injected)["args"] == [
        "sidecar",
        "--listen",
        "127.0.0.1:4000",
        "--health-listen",
        "0.0.0.0:4001",
    ]
    assert [v["name"] for v in injected["volumes"]] == ["data"]


def test_the_sidecar_learns_its_identity_from_the_downward_api_and_admission() -> None:
    """Namespace and labels from files the kubelet writes; the workload fixed at admission."""
    injected = injected_spec(POD_SPEC, CONFIG, "deployment/chatbot")
    assert injected is not None
    sidecar = _sidecar(injected)
    args = sidecar["args"]
    assert args[args.index("--workload") + 1] == "deployment/chatbot"
    assert args[args.index("--identity-dir") + 1] == "/var/run/llmquota/identity"
    (identity,) = [v for v in injected["volumes"] if v["name"] == "llmquota-identity"]
    assert identity["downwardAPI"]["items"] == [
        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
    ]
    assert {
        "name": "llmquota-identity",
        "mountPath": "/var/run/llmquota/identity",
        "readOnly": True,
    } in sidecar["volumeMounts"]
    (app,) = injected["containers"]
    assert "volumeMounts" not in app


def test_the_workload_comes_from_the_pods_owner_references() -> None:
    replica_set_pod = {
        "generateName": "chatbot-7d9f8b6c5-",
        "labels": {"app": "chatbot", "pod-template-hash": "7d9f8b6c5"},
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chatbot-7d9f8b6c5",
             "uid": "u", "controller": True},
        ],
    }  # fmt: skip
    assert pod_workload(replica_set_pod) == "deployment/chatbot"
    job_pod = {
        "name": "nightly-29000000-abcde",
        "ownerReferences": [{"kind": "Job", "name": "nightly-29000000", "controller": True}],
    }
    assert pod_workload(job_pod) == "job/nightly-29000000"
    cronjob = OwnerRef("CronJob", "nightly", controller=True)
    assert pod_workload(job_pod, cronjob) == "cronjob/nightly"
    assert pod_workload({"generateName": "debug-"}) == "pod/debug-"


def test_a_redis_password_secret_is_mounted_as_a_file_never_an_argument_value() -> None:
    config = SidecarConfig(
        image="i",
        redis_url="redis://r",
        redis_password_secret="llmquota-redis-password",
        redis_password_secret_key="redis-password",
    )
    injected = injected_spec(POD_SPEC, config, "deployment/chatbot")
    assert injected is not None
    sidecar = _sidecar(injected)
    args = sidecar["args"]
    assert args[args.index("--redis-password-file") + 1] == "/var/run/llmquota/redis/password"
    (volume,) = [v for v in injected["volumes"] if v["name"] == "llmquota-redis-password"]
    assert volume["secret"] == {
        "secretName": "llmquota-redis-password",
        "items": [{"key": "redis-password", "path": "password"}],
    }
    assert {
        "name": "llmquota-redis-password",
        "mountPath": "/var/run/llmquota/redis",
        "readOnly": True,
    } in sidecar["volumeMounts"]
    without = injected_spec(POD_SPEC, SidecarConfig(image="i", redis_url="redis://r"))
    assert without is not None
    assert "--redis-password-file" not in _sidecar(without)["args"]
