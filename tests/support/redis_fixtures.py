"""pytest plugin: a real redis-server per test session and a QuotaStore on a clean db.

Fixtures:

``redis_server`` (session)
    A :class:`~tests.support.redis_server.RedisEndpoint` whose ``url`` reaches the server.
``store`` (function)
    A :class:`~llmquota.store.QuotaStore` on a just-flushed database, using Redis TIME;
    closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from llmquota.store import QuotaStore

from .redis_server import RedisEndpoint, flush, session_redis

__all__ = ["redis_server", "store"]


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
