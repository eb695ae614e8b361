"""Settles run in the background, keep their lease renewed, and shutdown waits for them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError

from llmquota.sidecar.leases import InFlight
from llmquota.store import QuotaStore


class SlowStore:
    """Records calls; settles wait until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[tuple[Any, ...]] = []

    async def settle(self, request_id: str, cost_nanos: int, tokens: int) -> int:
        await self.release.wait()
        self.calls.append(("settle", request_id, cost_nanos, tokens))
        return 1

    async def abort(self, request_id: str) -> int:
        self.calls.append(("abort", request_id))
        return 1

    async def renew(self, request_ids: Sequence[str], lease_ms: int) -> int:
        self.calls.append(("renew", sorted(request_ids)))
        return len(request_ids)


def in_flight(store: object) -> InFlight:
    return InFlight(cast(QuotaStore, store), lease_ms=30_000)


async def test_a_settle_keeps_its_request_tracked_until_it_lands() -> None:
    store = SlowStore()
    tracked = in_flight(store)
    tracked.add("r1")
    tracked.finish("r1", (1000, 7))
    await asyncio.sleep(0)
    assert tracked.request_ids == {"r1"}  # still renewed while the settle is on its way
    store.release.set()
    await tracked.abort_all()
    assert store.calls == [("settle", "r1", 1000, 7)]
    assert tracked.request_ids == set()


async def test_shutdown_waits_for_settles_then_frees_the_rest() -> None:
    store = SlowStore()
    tracked = in_flight(store)
    tracked.add("served")
    tracked.add("cut-off")
    tracked.finish("served", (5, 1))
    shutdown = asyncio.create_task(tracked.abort_all())
    await asyncio.sleep(0.01)
    assert not shutdown.done()
    store.release.set()
    await shutdown
    assert store.calls == [("settle", "served", 5, 1), ("abort", "cut-off")]


async def test_a_store_that_is_down_is_logged_not_raised() -> None:
    class DownStore(SlowStore):
        async def abort(self, request_id: str) -> int:
            raise RedisConnectionError("down")

    tracked = in_flight(DownStore())
    tracked.add("r1")
    tracked.finish("r1", None)
    await tracked.abort_all()
    assert tracked.request_ids == set()


async def test_a_keys_next_admission_waits_for_its_settles_only() -> None:
    store = SlowStore()
    tracked = in_flight(store)
    tracked.add("r1", "key-a")
    tracked.finish("r1", (1000, 7))
    waiting = asyncio.create_task(tracked.settled("key-a"))
    await tracked.settled("key-b")  # another key's settles are not waited for
    await asyncio.sleep(0)
    assert not waiting.done()
    store.release.set()
    await asyncio.wait_for(waiting, timeout=1)
    assert store.calls == [("settle", "r1", 1000, 7)]
    await tracked.settled("key-a")  # nothing left to wait for


async def test_a_stuck_settle_is_waited_for_briefly() -> None:
    store = SlowStore()
    tracked = in_flight(store)
    tracked.add("r1", "key-a")
    tracked.finish("r1", (1000, 7))
    await asyncio.wait_for(tracked.settled("key-a"), timeout=1)
    assert tracked.request_ids == {"r1"}
    store.release.set()
    await tracked.abort_all()
