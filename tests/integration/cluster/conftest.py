"""Cluster fixtures: one real three-primary Redis Cluster for the module's tests, and a
QuotaStore on it, emptied before each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from tests.support.redis_server import ClusterGroup

from llmquota.store import QuotaStore


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    """Three Cluster primaries on loopback, started once per module (a start takes
    seconds); every process stopped by its pid afterwards."""
    group = ClusterGroup(tmp_path_factory.mktemp("cluster"))
    asyncio.run(group.start())
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
async def cluster_store(shared_cluster: ClusterGroup) -> AsyncIterator[QuotaStore]:
    """A QuotaStore on the emptied cluster, clocked by Redis TIME."""
    shared_cluster.flush()
    quota_store = QuotaStore.from_url(shared_cluster.url)
    yield quota_store
    await quota_store.close()
