"""Requests in flight: their reservations' leases, renewed together in one call per tick.

A reservation in Redis carries a lease so that a sidecar that dies does not hold budget
and parallel slots forever. While this one lives it renews the leases of all its
requests every lease/3, with one `renew` call however many there are.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from llmquota.store import QuotaStore

__all__ = ["InFlight"]

logger = logging.getLogger(__name__)


class InFlight:
    """The ids of admitted requests not yet settled or aborted."""

    def __init__(self, store: QuotaStore, lease_ms: int) -> None:
        self.store = store
        self.lease_ms = lease_ms
        self.request_ids: set[str] = set()

    def add(self, request_id: str) -> None:
        """Track a request whose reservation was just taken."""
        self.request_ids.add(request_id)

    def discard(self, request_id: str) -> None:
        """Stop tracking a settled or aborted request."""
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
        """Free the reservations of requests cut off by shutdown."""
        for request_id in list(self.request_ids):
            try:
                await self.store.abort(request_id)
            except (RedisError, OSError) as error:
                logger.warning("could not free reservation %s: %s", request_id, error)
            self.request_ids.discard(request_id)
