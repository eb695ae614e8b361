"""pytest plugin: a real redis-server per test session and a QuotaStore on a clean db.

Fixtures:

``redis_server`` (session)
    A :class:`~tests.support.redis_server.RedisEndpoint` whose ``url`` reaches the server.
``store`` (function)
    A :class:`~llmquota.store.QuotaStore` on a just-flushed database, using Redis TIME;
    closed after the test.
``sentinel_group`` (function)
    A :class:`~tests.support.redis_server.SentinelGroup` (primary, replica, three
    Sentinels) started for the test and stopped after it; ``url`` is its
    ``redis+sentinel://`` URL.
``cluster_group`` (function)
    A :class:`~tests.support.redis_server.ClusterGroup` (three Cluster primaries)
    started for the test and stopped after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llmquota.store import QuotaStore

from .redis_server import ClusterGroup, RedisEndpoint, SentinelGroup, flush, session_redis

__all__ = ["cluster_group", "redis_server", "sentinel_group", "store"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisEndpoint]:
    """One redis-server for the session."""
    with session_redis() as server:
        yield server


@pytest.fixture
async def store(redis_server: RedisEndpoint) -> AsyncIterator[QuotaStore]:
    """A QuotaStore on an empty database, clocked by Redis TIME."""
    flush(redis_server.url)
    quota_store = QuotaStore.from_url(redis_server.url)
    yield quota_store
    await quota_store.close()


@pytest.fixture
async def sentinel_group(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    """A primary, a replica and three Sentinels of its own for one test (which may kill
    the primary); every process stopped by its pid afterwards, however the test ended."""
    group = SentinelGroup(tmp_path / "sentinel")
    await group.start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
async def cluster_group(tmp_path: Path) -> AsyncIterator[ClusterGroup]:
    """Three Redis Cluster primaries of its own for one test; every process stopped by
    its pid afterwards."""
    group = ClusterGroup(tmp_path / "cluster")
    await group.start()
    try:
        yield group
    finally:
        group.stop()
