"""Requests in flight: their reservations' leases, renewed together in one call per tick.

A reservation in Redis carries a lease so that a sidecar that dies does not hold budget
and parallel slots forever. While this one lives it renews the leases of all its
requests every lease/3, with one `renew` call however many there are.

Settling (or freeing) a reservation runs as a task of its own, so that a client that
hangs up at the last moment cannot cancel it; the handler waits for it (a little) before
it ends the response, so the client's next request sees this one settled. A settle the
store cannot take (Redis down, restarting, loading) is retried, in memory, until it
lands: a served request is charged unless this process dies. Retries are bounded in
time (`SETTLE_RETRY_S`) and in number held (`MAX_PENDING_SETTLES`); the lease stays
renewed until the settle has landed, and shutdown waits for settles still running.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from llmquota.sidecar.metrics import SidecarMetrics
from llmquota.store import QuotaStore, StoreError, StoreUnavailable

__all__ = ["MAX_PENDING_SETTLES", "SETTLE_RETRY_S", "InFlight"]

logger = logging.getLogger(__name__)

# A Redis restart (with AOF loading) takes seconds; a failover under a minute. Past
# this the settle is given up (and logged): its lease has long expired.
SETTLE_RETRY_S = 300.0
# Each pending settle is a small task; past this many, new failures are not retried.
MAX_PENDING_SETTLES = 10_000
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0


class InFlight:
    """The ids of admitted requests not yet settled or aborted."""

    def __init__(
        self, store: QuotaStore, lease_ms: int, metrics: SidecarMetrics | None = None
    ) -> None:
        self.store = store
        self.lease_ms = lease_ms
        self.metrics = metrics
        self.request_ids: set[str] = set()
        # Strong references: the loop keeps only weak ones to tasks.
        self._finishing: set[asyncio.Task[None]] = set()
        self._retrying: set[str] = set()

    def add(self, request_id: str) -> None:
        """Track a request whose reservation was just taken."""
        self.request_ids.add(request_id)

    @property
    def pending_retries(self) -> int:
        """Settles (or frees) waiting for the store to answer again."""
        return len(self._retrying)

    def finish(self, request_id: str, charge: tuple[int, int] | None) -> asyncio.Task[None]:
        """Settle the reservation at `charge` (nano-USD, tokens), or free it (None), in
        the background, retried until the store takes it; the request stays tracked (its
        lease renewed) until done. The task is returned so a handler can wait for it."""
        task = asyncio.create_task(self._finish(request_id, charge))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    async def _finish(self, request_id: str, charge: tuple[int, int] | None) -> None:
        give_up_at = time.monotonic() + SETTLE_RETRY_S
        wait_s = _RETRY_FIRST_S
        try:
            while True:
                try:
                    await self._settle_once(request_id, charge)
                except StoreUnavailable as error:  # the same call may succeed later
                    if not self._may_retry(request_id, give_up_at, error, charge):
                        return
                except StoreError as error:
                    logger.error(
                        "the quota store refused the settle: %s",
                        error,
                        extra={"request_id": request_id, "charge": charge},
                    )
                    return
                else:
                    return
                await asyncio.sleep(wait_s * (0.5 + random.random()))
                wait_s = min(wait_s * 2, _RETRY_MAX_S)
        finally:
            self.request_ids.discard(request_id)
            self._retrying.discard(request_id)
            self._show_pending()

    async def _settle_once(self, request_id: str, charge: tuple[int, int] | None) -> None:
        if charge is None:
            await self.store.abort(request_id)
        else:
            await self.store.settle(request_id, *charge)

    def _may_retry(
        self,
        request_id: str,
        give_up_at: float,
        error: Exception,
        charge: tuple[int, int] | None,
    ) -> bool:
        """Count one more retry; False (logged) when time or room for retries ran out."""
        first = request_id not in self._retrying
        if first and len(self._retrying) >= MAX_PENDING_SETTLES:
            reason = f"{MAX_PENDING_SETTLES} settles already wait for the store"
        elif time.monotonic() >= give_up_at:
            reason = f"the store did not answer for {SETTLE_RETRY_S:g} s"
        else:
            if first:
                self._retrying.add(request_id)
                self._show_pending()
                logger.warning(
                    "quota store unreachable, settle will be retried: %s",
                    error,
                    extra={"request_id": request_id},
                )
            if self.metrics is not None:
                self.metrics.settle_retries.inc()
            return True
        logger.error(
            "settle given up (%s); the lease will expire: %s",
            reason,
            error,
            extra={"request_id": request_id, "charge": charge},
        )
        return False

    def _show_pending(self) -> None:
        if self.metrics is not None:
            self.metrics.settles_pending.set(len(self._retrying))

    async def renew_forever(self) -> None:
        """Renew every lease each lease/3 until cancelled; Redis errors are retried."""
        interval_s = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            if not self.request_ids:
                continue
            try:
                await self.store.renew(list(self.request_ids), self.lease_ms)
            except StoreError as error:
                logger.warning("could not renew %d leases: %s", len(self.request_ids), error)

    async def abort_all(self, timeout_s: float | None = None) -> None:
        """Let running settles land (for at most `timeout_s`), then free the reservations
        of requests cut off by shutdown."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._finishing:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            _, late = await asyncio.wait(set(self._finishing), timeout=left)
            if late and deadline is not None and time.monotonic() >= deadline:
                logger.error("shutdown: %d settles never reached the store", len(late))
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        for request_id in list(self.request_ids):
            try:
                await self.store.abort(request_id)
            except StoreError as error:
                logger.warning("could not free reservation %s: %s", request_id, error)
            self.request_ids.discard(request_id)
