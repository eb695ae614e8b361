"""Mirroring the sidecar's ConfigMap and credential Secret into workload namespaces.

The webhook mirrors them into a Pod's namespace as it injects the sidecar (so the Pod's
volumes exist by the time the kubelet mounts them), and `keep_mirrors` re-reads the
sources every status interval and updates every copy when a source changed. The copies
are found again after a restart by their label. What a copy looks like:
`rules.mirrored_objects`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from llmquota.operator.config import OperatorConfig, SidecarConfig
from llmquota.operator.rules.mirrored_objects import (
    MIRROR_SELECTOR,
    MIRRORED_FROM,
    MirrorSource,
    is_mirror_of,
    mirror_body,
    mirror_patch,
    sidecar_with_settings,
)
from llmquota.operator.state import OperatorState

__all__ = ["injected_sidecar", "keep_mirrors", "mirror_into", "mirror_sources", "refresh_sources"]

logger = logging.getLogger(__name__)


def mirror_sources(config: OperatorConfig) -> list[MirrorSource]:
    """The sidecar ConfigMap, the upstream, the Redis URL and password Secrets (only their
    keys), if set."""
    sidecar, home = config.sidecar, config.config_namespace
    if sidecar is None or home is None:
        return []
    sources: list[MirrorSource] = []
    if sidecar.pricing_config_map:
        sources.append(MirrorSource("ConfigMap", home, sidecar.pricing_config_map))
    if sidecar.upstream_secret:
        sources.append(
            MirrorSource("Secret", home, sidecar.upstream_secret, (sidecar.upstream_secret_key,))
        )
    if sidecar.redis_secret:
        sources.append(
            MirrorSource("Secret", home, sidecar.redis_secret, (sidecar.redis_secret_key,))
        )
    if sidecar.redis_password_secret:
        password = (sidecar.redis_password_secret_key,)
        sources.append(MirrorSource("Secret", home, sidecar.redis_password_secret, password))
    return sources


async def refresh_sources(state: OperatorState) -> bool:
    """Read the sources again; whether any changed since the last read."""
    found: dict[MirrorSource, dict[str, Any] | None] = {}
    for source in mirror_sources(state.config):
        found[source] = await state.kubernetes.read_object(
            source.kind, source.namespace, source.name
        )
    changed = {s: _content(o) for s, o in found.items()} != {
        s: _content(o) for s, o in state.mirror_sources.items()
    }
    state.mirror_sources = found
    state.sources_loaded = True
    return changed


def _content(found: Mapping[str, Any] | None) -> Any:
    if found is None:
        return None
    return (found.get("data"), found.get("binaryData"), found.get("type"))


async def injected_sidecar(state: OperatorState, sidecar: SidecarConfig) -> SidecarConfig:
    """The sidecar to inject now, with the settings of the sidecar ConfigMap."""
    if not state.sources_loaded:
        await refresh_sources(state)
    config_map = next(
        (found for source, found in state.mirror_sources.items() if source.kind == "ConfigMap"),
        None,
    )
    return sidecar_with_settings(sidecar, config_map)


async def mirror_into(state: OperatorState, namespace: str) -> bool:
    """Copy the sources into `namespace` (creating or updating); False if that failed.

    A failure is logged, not raised: the Pod is admitted anyway (it waits for its
    volumes), and `keep_mirrors` tries that namespace again.
    """
    state.mirror_namespaces.add(namespace)
    try:
        for source, found in list(state.mirror_sources.items()):
            if found is not None and source.namespace != namespace:
                await _ensure_copy(state, source, found, namespace)
    except (ApiException, OSError) as error:
        logger.warning("mirroring the sidecar's configuration into %s failed: %s", namespace, error)
        state.mirror_pending.add(namespace)
        return False
    state.mirror_pending.discard(namespace)
    return True


async def _ensure_copy(
    state: OperatorState, source: MirrorSource, found: Mapping[str, Any], namespace: str
) -> None:
    desired = mirror_body(source, found, namespace)
    existing = await state.kubernetes.read_object(source.kind, namespace, source.name)
    if existing is None:
        if await state.kubernetes.create_object(source.kind, desired):
            logger.info("mirrored %s %s into %s", source.kind, source.origin, namespace)
            return
        existing = await state.kubernetes.read_object(source.kind, namespace, source.name)
        if existing is None:
            return
    if not is_mirror_of(existing, source):
        logger.warning(
            "%s %s/%s exists and is not a copy of %s: left as it is",
            source.kind, namespace, source.name, source.origin,
        )  # fmt: skip
        return
    patch = mirror_patch(existing, desired)
    if patch:
        await state.kubernetes.merge_patch_object(source.kind, namespace, source.name, patch)
        logger.info("updated the copy of %s %s in %s", source.kind, source.origin, namespace)


async def _existing_copies(state: OperatorState) -> set[str]:
    """Namespaces that hold a copy of a source (made before this process started)."""
    namespaces: set[str] = set()
    for source in state.mirror_sources:
        for item in await state.kubernetes.labelled(
            source.kind, MIRROR_SELECTOR, state.config.namespaces
        ):
            metadata = item.get("metadata") or {}
            if (metadata.get("annotations") or {}).get(MIRRORED_FROM) == source.origin:
                namespaces.add(str(metadata.get("namespace")))
    return namespaces


async def keep_mirrors(state: OperatorState) -> None:
    """Forever: when a source changed, update every copy; retry namespaces that failed."""
    discovered = False
    while True:
        try:
            changed = await refresh_sources(state)
            if not discovered:
                state.mirror_namespaces |= await _existing_copies(state)
                discovered = True
            stale = state.mirror_namespaces if changed else set(state.mirror_pending)
            for namespace in sorted(stale):
                await mirror_into(state, namespace)
        except (ApiException, OSError) as error:
            logger.warning("reading the sidecar's configuration failed, will retry: %s", error)
        await asyncio.sleep(state.config.status_interval)
