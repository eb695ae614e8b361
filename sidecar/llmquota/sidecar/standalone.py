"""Standalone mode's background work: keep the store's policies equal to `--manifests`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from redis.exceptions import RedisError

from llmquota.manifests import ManifestResolver, apply_resolution, watch_manifest_dir
from llmquota.store import QuotaStore

__all__ = ["follow_manifests"]

logger = logging.getLogger(__name__)

RETRY_S = 1.0


async def follow_manifests(
    directory: Path, resolver: ManifestResolver, store: QuotaStore, loaded: asyncio.Event
) -> None:
    """Write the directory's policies now and after each change, until cancelled."""
    async for texts in watch_manifest_dir(directory):
        resolution = resolver.resolve(resolver.parse(texts))
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
