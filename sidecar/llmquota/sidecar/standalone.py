"""Standalone mode's background work: keep the store equal to `--manifests`, loudly.

- A folder with a problem is never half-applied: the policies of the last good folder
  stay, and /readyz says not ready, naming file, object and field, until it is fixed.
  (`llmquota sidecar` refuses to start on such a folder; see `command`.)
- A manifest without `metadata.creationTimestamp` has its windows cut from when it was
  first loaded, recorded in the store by the first replica (first writer wins).
- The policies are written with a generation marker. A store that lost it (FLUSHALL, a
  restart without its data, a new Redis behind the same URL) is noticed within
  `WATCH_INTERVAL_S`: /readyz turns not ready, the last spend snapshot and first-load
  times are restored and the policies re-written at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from llmquota.manifests import (
    ManifestFiles,
    ManifestResolver,
    ManifestSet,
    ObjectId,
    apply_resolution,
    watch_manifest_dir,
)
from llmquota.policy.identity import WorkloadPolicy
from llmquota.policy.limits import ResolvedPolicy
from llmquota.sidecar.spend_snapshot import (
    SNAPSHOT_INTERVAL_S,
    SpendSnapshot,
    read_snapshot,
    restore_snapshot,
    take_snapshot,
    write_snapshot,
)
from llmquota.store import QuotaStore, StoreError
from llmquota.store.workloads import replace_workload_policies

__all__ = ["WATCH_INTERVAL_S", "Standalone", "StandaloneStatus", "new_generation"]

logger = logging.getLogger(__name__)

RETRY_S = 1.0
WATCH_INTERVAL_S = 0.25
"""How often the generation marker is read: a wiped store is noticed within this."""

ResultT = TypeVar("ResultT")


@dataclass(slots=True)
class StandaloneStatus:
    """What keeps the sidecar from being ready, as /readyz reports it."""

    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    manifest_problems: list[str] = field(default_factory=list)
    store_problem: str | None = None

    def not_ready_reasons(self) -> list[str]:
        """Empty when ready."""
        reasons = [
            f"manifest problem (last good policies kept): {problem}"
            for problem in self.manifest_problems
        ]
        if not self.loaded.is_set() and not self.manifest_problems:
            reasons.append("manifests not loaded yet")
        if self.store_problem is not None:
            reasons.append(self.store_problem)
        return reasons


def new_generation() -> str:
    """A random marker, in digits: restore.lua keeps it in a counter's integer fields."""
    return str(10**18 + secrets.randbelow(10**18))


class Standalone:
    """Follows a manifests folder and guards the store the policies were written to."""

    def __init__(
        self,
        directory: Path,
        resolver: ManifestResolver,
        store: QuotaStore,
        state_file: Path | None,
        status: StandaloneStatus,
    ) -> None:
        """`state_file`: where the spend snapshot is kept across restarts (None: memory)."""
        self.directory = directory
        self.resolver = resolver
        self.store = store
        self.state_file = state_file
        self.status = status
        self.generation: str | None = None
        self.policies: dict[str, ResolvedPolicy] = {}
        self.workload_policies: list[WorkloadPolicy] = []
        self.created_ms: dict[str, int] = {}
        self.snapshot: SpendSnapshot | None = None
        self._written: SpendSnapshot | None = None
        self._write_error: str | None = None
        self._writes = asyncio.Lock()  # loading and restoring both write policies

    async def run(self) -> None:
        """Until cancelled."""
        await self._retrying(self._adopt_store, "cannot reach the store")
        guard = asyncio.create_task(self._guard_store())
        try:
            async for files in watch_manifest_dir(self.directory):
                await self._load(files)
        finally:
            guard.cancel()
            await asyncio.gather(guard, return_exceptions=True)

    async def _retrying(self, operation: Callable[[], Awaitable[ResultT]], what: str) -> ResultT:
        while True:
            try:
                return await operation()
            except (StoreError, OSError) as error:  # OSError: the state file
                logger.warning("%s, retrying: %s", what, error)
                await asyncio.sleep(RETRY_S)

    async def _adopt_store(self) -> None:
        """Take the store's generation; a store without one gets the state file back."""
        saved = None if self.state_file is None else read_snapshot(self.state_file)
        generation = await self.store.generation()
        if generation is None:
            self.snapshot = saved
            await self._restore()
            return
        self.generation = generation
        if saved is not None and saved.generation == generation:
            self.snapshot = saved  # a wipe before the first snapshot still has this one

    async def _restore(self) -> None:
        """Mark the store as a new generation, put back first-load times and spend, and
        re-write the last good policies (none before the first load)."""
        generation = await self.store.claim_generation(new_generation())
        restored = 0
        if self.snapshot is not None:
            self.created_ms = {**self.snapshot.created_ms, **self.created_ms}
            restored = await restore_snapshot(self.store, self.snapshot, generation)
        if self.created_ms:
            await self.store.claim_created(self.created_ms)
        for policy in self.policies.values():
            await self.store.put_policy(policy)
        await replace_workload_policies(self.store, self.workload_policies, [])
        self.generation = generation
        if restored or self.policies:
            logger.warning(
                "store restored",
                extra={"counters": restored, "keys": len(self.policies), "generation": generation},
            )

    async def _load(self, files: ManifestFiles) -> None:
        manifests = files.parse()
        async with self._writes:
            created = await self._retrying(
                lambda: self._claim_created(manifests), "cannot record first-load times"
            )
            resolution = self.resolver.resolve(manifests.anchored(created))
            if resolution.problems:
                self.status.manifest_problems = [str(problem) for problem in resolution.problems]
                for problem in resolution.problems:
                    logger.error("manifest problem, keeping the last good policies: %s", problem)
                return
            changed = await self._retrying(
                lambda: apply_resolution(self.store, resolution), "cannot write policies"
            )
            changed += await self._retrying(
                lambda: replace_workload_policies(
                    self.store, resolution.workload_policies, self.workload_policies
                ),
                "cannot write workload policies",
            )
            self.policies = resolution.policies
            self.workload_policies = resolution.workload_policies
        self.status.manifest_problems = []
        self.status.loaded.set()
        logger.info(
            "manifests loaded",
            extra={
                "keys": len(resolution.policies),
                "changed": changed,
                "directory": str(self.directory),
            },
        )

    async def _claim_created(self, manifests: ManifestSet) -> Mapping[ObjectId, datetime]:
        """Each unanchored object's first-load time, as the store records it."""
        subjects = {str(oid): oid for oid in manifests.unanchored()}
        if not subjects:
            return {}
        now_ms = await self.store.now_ms()
        recorded = await self.store.claim_created(dict.fromkeys(subjects, now_ms))
        self.created_ms.update(recorded)
        return {
            subjects[subject]: datetime.fromtimestamp(ms / 1000, tz=UTC)
            for subject, ms in recorded.items()
        }

    async def _guard_store(self) -> None:
        """Notice a wiped store and restore it; keep the spend snapshot fresh meanwhile."""
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                if await self.store.generation() != self.generation:
                    await self._recover()
                elif loop.time() >= next_snapshot and self.status.loaded.is_set():
                    next_snapshot = loop.time() + SNAPSHOT_INTERVAL_S
                    await self._take_snapshot()
            except (StoreError, OSError) as error:  # OSError: the state file
                logger.debug("store check failed (the readiness probe reports it): %s", error)

    async def _recover(self) -> None:
        self.status.store_problem = (
            "the store lost its data (generation marker gone or changed): "
            "restoring spend and policies"
        )
        logger.warning("store wiped or replaced: restoring spend and policies")
        async with self._writes:
            await self._restore()
        self.status.store_problem = None

    async def _take_snapshot(self) -> None:
        if self.generation is None:
            return
        snapshot = await take_snapshot(
            self.store, self.policies.values(), self.generation, self.created_ms
        )
        if snapshot is None:  # wiped since the last check: the next check restores
            return
        self.snapshot = snapshot
        if self.state_file is not None and snapshot != self._written:
            try:
                await asyncio.to_thread(write_snapshot, self.state_file, snapshot)
            except OSError as error:
                if self._write_error != str(error):  # once, not every second
                    logger.warning("cannot write the state file %s: %s", self.state_file, error)
                self._write_error = str(error)
                return
            self._written, self._write_error = snapshot, None
