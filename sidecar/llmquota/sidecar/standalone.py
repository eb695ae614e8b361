"""Standalone mode's background work: keep the store's policies equal to `--manifests`."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

from redis.exceptions import RedisError

from llmquota.manifests import ManifestResolver, apply_resolution, watch_manifest_dir
from llmquota.store import QuotaStore

__all__ = ["follow_manifests"]

logger = logging.getLogger(__name__)

RETRY_S = 1.0


async def _adopt_stored_anchors(store: QuotaStore, resolver: ManifestResolver) -> None:
    """Keep the budget windows that a previous run (or another sidecar) anchored."""
    hashes = await store.policy_hashes()
    policies = [await store.get_policy(key_hash) for key_hash in hashes]
    resolver.adopt_anchors(policy for policy in policies if policy is not None)


async def follow_manifests(
    directory: Path, resolver: ManifestResolver, store: QuotaStore, loaded: asyncio.Event
) -> None:
    """Write the directory's policies now and after each change, until cancelled."""
    while True:
        try:
            await _adopt_stored_anchors(store, resolver)
            break
        except (RedisError, OSError) as error:
            logger.warning("cannot read stored policies yet: %s", error)
            await asyncio.sleep(RETRY_S)
    async for texts in watch_manifest_dir(directory):
        resolution = resolver.resolve(resolver.parse(texts, datetime.now(UTC)))
        while True:
            try:
                changed = await apply_resolution(store, resolution)
                break
            except (RedisError, OSError) as error:
                logger.warning("cannot write policies, retrying: %s", error)
                await asyncio.sleep(RETRY_S)
        logger.info(
            "manifests loaded",
            extra={
                "keys": len(resolution.policies),
                "changed": changed,
                "directory": str(directory),
            },
        )
        loaded.set()
