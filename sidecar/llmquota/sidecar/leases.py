"""Requests in flight: their reservations' leases, renewed together in one call per tick.

A reservation in Redis carries a lease so that a sidecar that dies does not hold budget
and parallel slots forever. While this one lives it renews the leases of all its
requests every lease/3, with one `renew` call however many there are.

Settling (or freeing) a reservation runs as a task of its own, not in the handler: the
response is complete before it, so the client's keep-alive connection can carry its
next request while the settle is on its way to Redis, and a client that hangs up at the
last moment cannot cancel it. The lease stays renewed until the settle has landed, and
shutdown waits for every settle still running. A key's next admission waits (briefly)
for that key's settles still on their way, so that a client sending one request after
another is never judged by the reservation of the one it already has its answer to.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from llmquota.store import QuotaStore

__all__ = ["InFlight"]

logger = logging.getLogger(__name__)

SETTLE_WAIT_S = 0.1
"""The longest an admission waits for its key's earlier settles (one Redis round trip
normally; a store in trouble is not waited out)."""


class InFlight:
    """The ids of admitted requests not yet settled or aborted."""

    def __init__(self, store: QuotaStore, lease_ms: int) -> None:
        self.store = store
        self.lease_ms = lease_ms
        self.request_ids: set[str] = set()
        # Strong references: the loop keeps only weak ones to tasks.
        self._finishing: set[asyncio.Task[None]] = set()
        self._key_of: dict[str, str] = {}  # request id -> key hash, while in flight
        self._settling: dict[str, set[asyncio.Task[None]]] = {}  # key hash -> its settles

    def add(self, request_id: str, key_hash: str = "") -> None:
        """Track a request whose reservation was just taken (for the key `key_hash`)."""
        self.request_ids.add(request_id)
        self._key_of[request_id] = key_hash

    def finish(self, request_id: str, charge: tuple[int, int] | None) -> None:
        """Settle the reservation at `charge` (nano-USD, tokens), or free it (None), in
        the background; the request stays tracked (its lease renewed) until done."""
        task = asyncio.create_task(self._finish(request_id, charge))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        key_hash = self._key_of.pop(request_id, "")
        settling = self._settling.setdefault(key_hash, set())
        settling.add(task)

        def forget(done: asyncio.Task[None]) -> None:
            settling.discard(done)
            if not settling:
                self._settling.pop(key_hash, None)

        task.add_done_callback(forget)

    async def settled(self, key_hash: str) -> None:
        """Wait until the settles of `key_hash` already on their way have landed, for at
        most `SETTLE_WAIT_S`."""
        settling = self._settling.get(key_hash)
        if settling:
            await asyncio.wait(list(settling), timeout=SETTLE_WAIT_S)

    async def _finish(self, request_id: str, charge: tuple[int, int] | None) -> None:
        try:
            if charge is None:
                await self.store.abort(request_id)
            else:
                await self.store.settle(request_id, *charge)
        except (RedisError, OSError) as error:
            logger.error(
                "could not settle with the quota store; the lease will expire: %s",
                error,
                extra={"request_id": request_id, "charge": charge},
            )
        finally:
            self.request_ids.discard(request_id)

    async def renew_forever(self) -> None:
        """Renew every lease each lease/3 until cancelled; Redis errors are retried."""
        interval_s = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            if not self.request_ids:
                continue
            try:
                await self.store.renew(list(self.request_ids), self.lease_ms)
            except (RedisError, OSError) as error:
                logger.warning("could not renew %d leases: %s", len(self.request_ids), error)

    async def abort_all(self) -> None:
        """Let running settles land, then free the reservations of requests cut off by
        shutdown."""
        while self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        for request_id in list(self.request_ids):
            try:
                await self.store.abort(request_id)
            except (RedisError, OSError) as error:
                logger.warning("could not free reservation %s: %s", request_id, error)
            self.request_ids.discard(request_id)
