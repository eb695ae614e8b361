"""Settles run in the background, keep their lease renewed, and shutdown waits for them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from llmquota.pricing import load_price_table
from llmquota.sidecar import leases
from llmquota.sidecar.leases import InFlight
from llmquota.sidecar.metrics import SidecarMetrics
from llmquota.store import QuotaStore, StoreUnavailable


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


class FlakyStore(SlowStore):
    """Down for the first `failures` settles, then answers."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.release.set()

    async def settle(self, request_id: str, cost_nanos: int, tokens: int) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("down")
        return await super().settle(request_id, cost_nanos, tokens)


async def test_a_settle_the_store_missed_is_retried_until_it_lands() -> None:
    store = FlakyStore(failures=4)
    metrics = SidecarMetrics.create(load_price_table(None))
    tracked = InFlight(cast(QuotaStore, store), lease_ms=30_000, metrics=metrics)
    tracked.add("r1")
    task = tracked.finish("r1", (1000, 7))
    await asyncio.sleep(0.01)
    assert tracked.pending_retries == 1
    assert tracked.request_ids == {"r1"}  # its lease is still renewed meanwhile
    await asyncio.wait_for(task, timeout=10)
    assert store.calls == [("settle", "r1", 1000, 7)]
    assert tracked.pending_retries == 0
    assert metrics.registry.get_sample_value("llmquota_settle_retries_total") == 4
    assert metrics.registry.get_sample_value("llmquota_settles_pending") == 0


async def test_settles_that_never_land_are_given_up_at_shutdown() -> None:
    tracked = in_flight(FlakyStore(failures=10**9))
    tracked.add("r1")
    tracked.finish("r1", (5, 1))
    await tracked.abort_all(timeout_s=0.3)
    assert tracked.request_ids == set()
    assert tracked.pending_retries == 0


async def test_retries_are_bounded_in_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "MAX_PENDING_SETTLES", 3)
    store = FlakyStore(failures=10**9)
    tracked = in_flight(store)
    for number in range(5):
        tracked.add(f"r{number}")
        tracked.finish(f"r{number}", (5, 1))
    await asyncio.sleep(0.01)
    assert tracked.pending_retries == 3
    await tracked.abort_all(timeout_s=0.1)
