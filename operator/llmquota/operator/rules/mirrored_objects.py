"""What the sidecar's ConfigMap and credential Secret look like mirrored, as pure functions.

A Pod mounts only ConfigMaps and Secrets of its own namespace, but the chart keeps the
sidecar's configuration (`--sidecar-config-map`) and the upstream credential
(`--upstream-secret`) in the operator's namespace. So the operator copies them into
each namespace where it injects a sidecar, under the same names. A copy is owned by
nothing (garbage collection leaves it while Pods mount it), labelled
`app.kubernetes.io/managed-by: llmquota` and annotated with its source; an object of the
same name that is not such a copy is never touched.

The ConfigMap also carries the injected container's settings: `resources.yaml` (its
resources) and `fail-open`, read here into the `SidecarConfig` the webhook injects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import yaml

from llmquota.operator.config import SidecarConfig
from llmquota.operator.rules.status_view import merge_patch

__all__ = [
    "FAIL_OPEN_FIELD",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "MIRRORED_FROM",
    "MIRROR_SELECTOR",
    "RESOURCES_FIELD",
    "MirrorKind",
    "MirrorSource",
    "is_mirror_of",
    "mirror_body",
    "mirror_patch",
    "sidecar_with_settings",
]

logger = logging.getLogger(__name__)

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "llmquota"
MIRROR_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
MIRRORED_FROM = "llmquota.dev/mirrored-from"
"""Annotation on a copy: `<namespace>/<name>` of the object it mirrors."""
RESOURCES_FIELD = "resources.yaml"
FAIL_OPEN_FIELD = "fail-open"
_COPIED = ("data", "binaryData")

MirrorKind = Literal["ConfigMap", "Secret"]


@dataclass(frozen=True, slots=True)
class MirrorSource:
    """One object to mirror; `fields` limits the data keys copied (None: all)."""

    kind: MirrorKind
    namespace: str
    name: str
    fields: tuple[str, ...] | None = None

    @property
    def origin(self) -> str:
        """`<namespace>/<name>`, as the copies' annotation says."""
        return f"{self.namespace}/{self.name}"


def _copied(source: MirrorSource, found: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    content: dict[str, dict[str, str]] = {}
    for part in _COPIED:
        values = found.get(part) or {}
        picked = {k: v for k, v in values.items() if source.fields is None or k in source.fields}
        if picked or part == "data":
            content[part] = picked
    return content


def mirror_body(source: MirrorSource, found: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The copy of `found` (the source object) to create in `namespace`."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": source.kind,
        "metadata": {
            "name": source.name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {MIRRORED_FROM: source.origin},
        },
        **_copied(source, found),
    }
    if source.kind == "Secret":
        body["type"] = found.get("type") or "Opaque"
    return body


def is_mirror_of(existing: Mapping[str, Any], source: MirrorSource) -> bool:
    """Whether `existing` is a copy the operator made of `source` (else: leave it alone)."""
    metadata = existing.get("metadata") or {}
    return (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY and (
        metadata.get("annotations") or {}
    ).get(MIRRORED_FROM) == source.origin


def mirror_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that brings a copy's data up to date; empty when it is."""
    current = {part: existing.get(part) or {} for part in _COPIED}
    wanted = {part: desired.get(part) or {} for part in _COPIED}
    return merge_patch(current, wanted)


def sidecar_with_settings(
    sidecar: SidecarConfig, config_map: Mapping[str, Any] | None
) -> SidecarConfig:
    """The sidecar to inject, with `resources.yaml` and `fail-open` of the ConfigMap.

    The ConfigMap's values win over the flags, so that changing the chart's values
    reaches new Pods without restarting the operator.
    """
    data = (config_map or {}).get("data") or {}
    fail_open = sidecar.fail_open
    if FAIL_OPEN_FIELD in data:
        fail_open = str(data[FAIL_OPEN_FIELD]).strip().lower() in {"true", "1", "yes"}
    resources = sidecar.resources
    if RESOURCES_FIELD in data:
        try:
            parsed = yaml.safe_load(data[RESOURCES_FIELD])
        except yaml.YAMLError:
            logger.warning("%s of the sidecar ConfigMap is not YAML: ignored", RESOURCES_FIELD)
        else:
            resources = dict(parsed) if isinstance(parsed, Mapping) and parsed else resources
    return replace(sidecar, fail_open=fail_open, resources=resources)
