"""The sidecar injection, as a pure function of a Pod spec and the sidecar config.

Pods annotated `llmquota.dev/inject: "true"` get the `llmquota sidecar` as a native
sidecar: the first init container, with `restartPolicy: Always`. So it is up (its
startup probe passed) before any other container starts, and it never keeps a Job's
Pod from completing. The proxy listens on 127.0.0.1:4000 only, the app containers'
OPENAI_BASE_URL; the probes and /metrics are served on the Pod's IP (`--health-listen`
0.0.0.0:4001), since the kubelet probes, and Prometheus scrapes, from outside the Pod.

The sidecar gets the upstream credential (a Secret volume the app containers do not
mount), the sidecar ConfigMap (pricing) and the Redis URL from a Secret through an
environment variable: a password in that URL would otherwise show in the Pod spec and
in the process list. A Redis password Secret, when the chart sets one, is mounted as a
file (`--redis-password-file`), never put on the command line.

The Pod's identity, for keyless requests (docs/keyless.md): its namespace and labels
come from a downward API volume, its workload (`deployment/chatbot`) from the Pod's
ownerReferences as they are at admission, set as `--workload` on the sidecar container.
A container spec cannot be changed after admission, so a running Pod cannot claim another
workload; the downward API's files are written by the kubelet, not by anything in the Pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmquota.operator.config import SidecarConfig
from llmquota.policy.identity import OwnerRef, workload_of

__all__ = [
    "HEALTH_PORT",
    "INJECT_ANNOTATION",
    "SIDECAR_LISTEN",
    "SIDECAR_NAME",
    "injected_spec",
    "pod_workload",
    "wants_injection",
]

INJECT_ANNOTATION = "llmquota.dev/inject"
SIDECAR_NAME = "llmquota-sidecar"
SIDECAR_LISTEN = "127.0.0.1:4000"
HEALTH_PORT = 4001
HEALTH_LISTEN = f"0.0.0.0:{HEALTH_PORT}"
HEALTH_PORT_NAME = "llmquota-health"
BASE_URL = f"http://{SIDECAR_LISTEN}/v1"
REDIS_ENV = "LLMQUOTA_REDIS"
UPSTREAM_VOLUME = "llmquota-upstream"
UPSTREAM_DIR = "/var/run/llmquota/upstream"
PRICING_VOLUME = "llmquota-pricing"
PRICING_DIR = "/etc/llmquota"
PRICING_FILE = f"{PRICING_DIR}/pricing.yaml"
REDIS_PASSWORD_VOLUME = "llmquota-redis-password"  # noqa: S105 (a volume name)
REDIS_PASSWORD_DIR = "/var/run/llmquota/redis"  # noqa: S105 (a directory)
REDIS_PASSWORD_FILE = "password"  # noqa: S105 (a file name, not a secret)
IDENTITY_VOLUME = "llmquota-identity"
IDENTITY_DIR = "/var/run/llmquota/identity"
IDENTITY_FIELDS = {"namespace": "metadata.namespace", "labels": "metadata.labels"}
"""Downward API files of the identity volume: file name -> the Pod's field."""
# The app waits for the sidecar's startup probe: up to 2 minutes for Redis to answer.
STARTUP_PROBE_PERIOD_S = 1
STARTUP_PROBE_FAILURES = 120


def wants_injection(annotations: Mapping[str, str]) -> bool:
    """Whether a Pod asked for the sidecar."""
    return annotations.get(INJECT_ANNOTATION, "").lower() == "true"


def pod_workload(metadata: Mapping[str, Any], owner_of_owner: OwnerRef | None = None) -> str:
    """The workload of a Pod being admitted, from its metadata (see `identity.workload_of`).

    A Pod named by `generateName` only has no name yet; such a Pod without a controller is
    its own workload under that prefix.
    """
    owners = [
        OwnerRef(
            kind=str(owner.get("kind", "")),
            name=str(owner.get("name", "")),
            controller=bool(owner.get("controller")),
        )
        for owner in metadata.get("ownerReferences") or []
    ]
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    return workload_of(name, owners, metadata.get("labels") or {}, owner_of_owner)


def _http_probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": HEALTH_PORT_NAME}, **timing}


def _redis_env(config: SidecarConfig) -> dict[str, Any]:
    if config.redis_secret:
        reference = {"name": config.redis_secret, "key": config.redis_secret_key}
        return {"name": REDIS_ENV, "valueFrom": {"secretKeyRef": reference}}
    return {"name": REDIS_ENV, "value": config.redis_url}


def _sidecar_container(config: SidecarConfig, workload: str | None) -> dict[str, Any]:
    args = ["sidecar", "--listen", SIDECAR_LISTEN, "--health-listen", HEALTH_LISTEN]
    mounts: list[dict[str, Any]] = []
    if workload is not None:
        args += ["--identity-dir", IDENTITY_DIR, "--workload", workload]
        mounts.append({"name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR, "readOnly": True})
    if config.redis_password_secret:
        args += ["--redis-password-file", f"{REDIS_PASSWORD_DIR}/{REDIS_PASSWORD_FILE}"]
        mounts.append(
            {"name": REDIS_PASSWORD_VOLUME, "mountPath": REDIS_PASSWORD_DIR, "readOnly": True}
        )
    if config.upstream:
        args += ["--upstream", config.upstream]
    if config.upstream_secret:
        args += ["--upstream-key-file", f"{UPSTREAM_DIR}/{config.upstream_secret_key}"]
        mounts.append({"name": UPSTREAM_VOLUME, "mountPath": UPSTREAM_DIR, "readOnly": True})
    if config.fail_open:
        args.append("--fail-open")
    if config.pricing_config_map:
        args += ["--pricing", PRICING_FILE]
        mounts.append({"name": PRICING_VOLUME, "mountPath": PRICING_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": config.image,
        "restartPolicy": "Always",
        "command": ["llmquota"],
        "args": args,
        "env": [_redis_env(config)],
        "ports": [{"name": HEALTH_PORT_NAME, "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "startupProbe": _http_probe(
            "/readyz",
            periodSeconds=STARTUP_PROBE_PERIOD_S,
            failureThreshold=STARTUP_PROBE_FAILURES,
        ),
        "readinessProbe": _http_probe("/readyz", periodSeconds=5),
        "livenessProbe": _http_probe("/healthz", periodSeconds=10, failureThreshold=3),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if config.resources:
        container["resources"] = dict(config.resources)
    return container


def _volumes(config: SidecarConfig, workload: str | None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    if workload is not None:
        items = [
            {"path": path, "fieldRef": {"fieldPath": field}}
            for path, field in IDENTITY_FIELDS.items()
        ]
        volumes.append({"name": IDENTITY_VOLUME, "downwardAPI": {"items": items}})
    if config.redis_password_secret:
        volumes.append(
            {
                "name": REDIS_PASSWORD_VOLUME,
                "secret": {
                    "secretName": config.redis_password_secret,
                    "items": [
                        {"key": config.redis_password_secret_key, "path": REDIS_PASSWORD_FILE}
                    ],
                },
            }
        )
    if config.upstream_secret:
        volumes.append(
            {
                "name": UPSTREAM_VOLUME,
                "secret": {
                    "secretName": config.upstream_secret,
                    "items": [
                        {"key": config.upstream_secret_key, "path": config.upstream_secret_key}
                    ],
                },
            }
        )
    if config.pricing_config_map:
        volumes.append(
            {
                "name": PRICING_VOLUME,
                "configMap": {"name": config.pricing_config_map, "optional": True},
            }
        )
    return volumes


def _with_base_url(container: Mapping[str, Any]) -> dict[str, Any]:
    env = [entry for entry in container.get("env") or [] if entry.get("name") != "OPENAI_BASE_URL"]
    return {**container, "env": [*env, {"name": "OPENAI_BASE_URL", "value": BASE_URL}]}


def injected_spec(
    pod_spec: Mapping[str, Any], config: SidecarConfig, workload: str | None = None
) -> dict[str, Any] | None:
    """`initContainers`, `containers`, `volumes` with the sidecar; None if already injected.

    `workload` is the Pod's (`pod_workload`), for keyless requests; None: the sidecar
    serves virtual keys only.

    A sidecar among the plain containers (injected by an operator before native
    sidecars) counts as injected too.
    """
    init_containers = list(pod_spec.get("initContainers") or [])
    containers = list(pod_spec.get("containers") or [])
    if any(c.get("name") == SIDECAR_NAME for c in [*init_containers, *containers]):
        return None
    ours = {volume["name"] for volume in _volumes(config, workload)}
    volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in ours]
    return {
        "initContainers": [_sidecar_container(config, workload), *init_containers],
        "containers": [_with_base_url(container) for container in containers],
        "volumes": [*volumes, *_volumes(config, workload)],
    }
