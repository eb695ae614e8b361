"""The sidecar injection, as a pure function of a Pod spec and the sidecar config.

Pods annotated `llmquota.dev/inject: "true"` get the `llmquota sidecar` container on
127.0.0.1:4000, the upstream credential (a Secret volume the app containers do not
mount) and the sidecar ConfigMap (pricing), and their app containers get OPENAI_BASE_URL pointing
at the sidecar, so an unmodified OpenAI client goes through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmquota.operator.config import SidecarConfig

__all__ = [
    "INJECT_ANNOTATION",
    "SIDECAR_LISTEN",
    "SIDECAR_NAME",
    "injected_spec",
    "wants_injection",
]

INJECT_ANNOTATION = "llmquota.dev/inject"
SIDECAR_NAME = "llmquota-sidecar"
SIDECAR_LISTEN = "127.0.0.1:4000"
BASE_URL = f"http://{SIDECAR_LISTEN}/v1"
UPSTREAM_VOLUME = "llmquota-upstream"
UPSTREAM_DIR = "/var/run/llmquota/upstream"
PRICING_VOLUME = "llmquota-pricing"
PRICING_DIR = "/etc/llmquota"
PRICING_FILE = f"{PRICING_DIR}/pricing.yaml"


def wants_injection(annotations: Mapping[str, str]) -> bool:
    """Whether a Pod asked for the sidecar."""
    return annotations.get(INJECT_ANNOTATION, "").lower() == "true"


def _sidecar_container(config: SidecarConfig) -> dict[str, Any]:
    args = ["sidecar", "--listen", SIDECAR_LISTEN, "--redis", config.redis_url]
    mounts: list[dict[str, Any]] = []
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
        "command": ["llmquota"],
        "args": args,
        "ports": [{"name": "llmquota", "containerPort": 4000, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 4000, "host": "127.0.0.1"}},
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


def _volumes(config: SidecarConfig) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
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


def injected_spec(pod_spec: Mapping[str, Any], config: SidecarConfig) -> dict[str, Any] | None:
    """`containers` and `volumes` of the Pod with the sidecar; None if already injected."""
    containers = list(pod_spec.get("containers") or [])
    if any(container.get("name") == SIDECAR_NAME for container in containers):
        return None
    ours = {volume["name"] for volume in _volumes(config)}
    volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in ours]
    return {
        "containers": [*map(_with_base_url, containers), _sidecar_container(config)],
        "volumes": [*volumes, *_volumes(config)],
    }
