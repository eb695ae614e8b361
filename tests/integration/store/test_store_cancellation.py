"""A store call ends its task when the task is cancelled, whatever the client does with it.

The sidecar's and the operator's background loops catch Redis errors and go on, and end
only when shutdown cancels them. With a socket timeout (both set one), redis-py sends
each command through `asyncio.wait_for`, which in Python 3.11 drops a cancellation that
arrives just as the send completes: the loop would never see its shutdown. A loop as busy
as a sidecar's under load is cancelled many times here; every time it must end at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import RedisError
from tests.support.redis_server import RedisEndpoint
from tests.support.waiting import wait_until

from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

CANCELS = 10
ENDS_WITHIN_S = 2.0


@pytest.fixture
async def timed_store(redis_server: RedisEndpoint) -> AsyncIterator[QuotaStore]:
    """A store with a socket timeout, as the sidecar (2 s) and the operator (10 s) open it."""
    store = QuotaStore.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=2)
    yield store
    await store.close()


async def retry_forever(store: QuotaStore) -> None:
    """The shape of every background loop: call the store, log a Redis error, go on."""
    while True:
        with contextlib.suppress(RedisError, OSError):
            await store.generation()
            await store.policy_hashes()


async def cancel_again(loop: asyncio.Task[None]) -> bool:
    """Cancel a loop that swallowed its cancellation once more; True once it ended."""
    loop.cancel()
    await asyncio.wait([loop], timeout=0.1)
    return loop.done()


async def test_a_busy_loop_ends_at_every_cancel(timed_store: QuotaStore) -> None:
    chance = random.Random(14)
    kept_running = 0
    for _ in range(CANCELS):
        loop = asyncio.create_task(retry_forever(timed_store))
        await asyncio.sleep(chance.uniform(0.001, 0.02))
        loop.cancel()
        done, _ = await asyncio.wait([loop], timeout=ENDS_WITHIN_S)
        if not done:
            kept_running += 1
            await wait_until(functools.partial(cancel_again, loop), 10, what="the loop's end")
        assert loop.cancelled()
    assert kept_running == 0, f"{kept_running} of {CANCELS} cancelled loops kept running"
