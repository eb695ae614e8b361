"""Policies cached in memory, dropped when the store announces a change.

A request costs one Redis GET the first time its key is seen and none after, until the
operator (or the standalone loader) changes that key's policy and the store publishes
its hash. Unknown keys are cached too (bounded), so a client retrying a wrong key does
not cost a GET each time; creating the key publishes its hash and clears the entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from llmquota.policy.admission import forget_plans
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore, StoreError

__all__ = ["PolicyCache"]

logger = logging.getLogger(__name__)

MAX_UNKNOWN_KEYS = 10_000
RESUBSCRIBE_MIN_S = 0.1
RESUBSCRIBE_MAX_S = 5.0


class PolicyCache:
    """Key hash -> policy (None: no such key), kept fresh by `follow_changes`."""

    def __init__(self, store: QuotaStore, also: Callable[[str], None] | None = None) -> None:
        """`also` hears every change too (the workload policies' cache)."""
        self.store = store
        self._also = also
        self._policies: dict[str, ResolvedPolicy | None] = {}
        self._unknown = 0
        # Bumped on every invalidation: a GET that started before one must not cache
        # what it read, since that may be the policy the change replaced.
        self._generation = 0
        self.subscribed = asyncio.Event()

    async def get(self, key_hash: str) -> ResolvedPolicy | None:
        """The key's policy from memory, or from the store on a miss."""
        try:
            return self._policies[key_hash]
        except KeyError:
            pass
        generation = self._generation
        policy = await self.store.get_policy(key_hash)
        if generation == self._generation:
            if policy is None:
                if self._unknown >= MAX_UNKNOWN_KEYS:
                    self._drop_all()
                self._unknown += 1
            self._policies[key_hash] = policy
        return policy

    def invalidate(self, key_hash: str) -> None:
        """Forget one key (`*`: every key), and the admission plans, which hold the
        policies they were made for."""
        self._generation += 1
        forget_plans()
        if self._also is not None:
            self._also(key_hash)
        if key_hash == "*":
            self._drop_all()
        elif self._policies.pop(key_hash, 0) is None:
            self._unknown -= 1

    def _drop_all(self) -> None:
        self._policies.clear()
        self._unknown = 0

    async def follow_changes(self) -> None:
        """Apply the store's change notifications until cancelled; resubscribe with
        backoff when Redis goes away.

        The cache outlives a broken feed: while Redis is unreachable the cached policies
        are the only ones there are, and `--fail-open` admits their keys. Changes missed
        meanwhile are not lost, since a fresh subscription yields `*` first (drop all).
        """
        backoff = RESUBSCRIBE_MIN_S
        while True:
            try:
                async for key_hash in self.store.policy_changes():
                    self.invalidate(key_hash)
                    self.subscribed.set()
                    backoff = RESUBSCRIBE_MIN_S
            except StoreError as error:
                logger.warning("policy change feed lost, resubscribing: %s", error)
            self.subscribed.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)
