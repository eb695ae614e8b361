"""Store fixtures: a store whose clock the test drives, on a flushed database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from tests.integration.store.scenario import ManualClock
from tests.support.redis_server import RedisEndpoint, flush

from llmquota.store import QuotaStore

# Mid-minute, mid-month, so a test only crosses a boundary when it means to.
CLOCK_START = datetime(2026, 3, 10, 12, 0, 20, 250_000, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The injected clock, at CLOCK_START."""
    return ManualClock(CLOCK_START)


@pytest.fixture
async def clocked_store(
    redis_server: RedisEndpoint, clock: ManualClock
) -> AsyncIterator[QuotaStore]:
    """A QuotaStore on an empty database whose scripts read `clock` instead of TIME."""
    flush(redis_server.url)
    quota_store = QuotaStore.from_url(redis_server.url, clock_ms=clock)
    yield quota_store
    await quota_store.close()
