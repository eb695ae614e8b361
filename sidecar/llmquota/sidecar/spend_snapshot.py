"""Standalone mode's spend snapshot: what a wiped or replaced store is restored from.

Without an operator there is no status to re-seed counters from, so the sidecar keeps a
copy of its budget counters and of the manifests' first-load times, in memory and in
`--state-file`, taken every `SNAPSHOT_INTERVAL_S`. A restore adds it back once per store
generation, so what a wipe can lose is bounded: the spend settled since the last
snapshot, and the cost of requests in flight at the wipe (their leases went with it).
End users' counters (one per `user` in request bodies) are not kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmquota.policy.limits import BudgetLimits, ResolvedPolicy
from llmquota.store import BudgetCounter, QuotaStore

__all__ = [
    "SNAPSHOT_INTERVAL_S",
    "SnapshotCounter",
    "SpendSnapshot",
    "default_state_file",
    "read_snapshot",
    "restore_snapshot",
    "take_snapshot",
    "write_snapshot",
]

logger = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 1.0
"""How often counters are copied: the spend a wipe may lose is what settled in this time."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SnapshotCounter(_Frozen):
    """One budget counter as it was: its scope, its limits' window and its spend."""

    tag: str
    scope_id: str
    limits: BudgetLimits
    window_start_ms: int
    spend_nanos: int
    model_spend_nanos: dict[str, int] = Field(default_factory=dict)

    def as_counter(self) -> BudgetCounter:
        """The counter in the store's form."""
        return BudgetCounter(
            window_start_ms=self.window_start_ms,
            spend_nanos=self.spend_nanos,
            model_spend_nanos=dict(self.model_spend_nanos),
        )


class SpendSnapshot(_Frozen):
    """Counters and first-load times of one store generation."""

    generation: str
    created_ms: dict[str, int] = Field(default_factory=dict)
    counters: list[SnapshotCounter] = Field(default_factory=list)


def _budget_scopes(policies: Iterable[ResolvedPolicy]) -> list[tuple[str, str, BudgetLimits]]:
    """Every budget scope of the policies once (a team's is in each of its keys')."""
    scopes: dict[tuple[str, str], BudgetLimits] = {}
    for policy in policies:
        for scope in policy.scopes:
            if scope.budget is not None:
                scopes[scope.tag, scope.id] = scope.budget
    return [(tag, scope_id, limits) for (tag, scope_id), limits in sorted(scopes.items())]


async def take_snapshot(
    store: QuotaStore,
    policies: Iterable[ResolvedPolicy],
    generation: str,
    created_ms: Mapping[str, int],
) -> SpendSnapshot | None:
    """The policies' counters now; None when the store is no longer of `generation` (it
    was wiped: its zeros must not replace the last good snapshot)."""
    scopes = _budget_scopes(policies)
    marker, counters = await store.generation_and_budgets([(tag, sid) for tag, sid, _ in scopes])
    if marker != generation:
        return None
    return SpendSnapshot(
        generation=generation,
        created_ms=dict(created_ms),
        counters=[
            SnapshotCounter(
                tag=tag,
                scope_id=scope_id,
                limits=limits,
                window_start_ms=counter.window_start_ms,
                spend_nanos=counter.spend_nanos,
                model_spend_nanos=counter.model_spend_nanos,
            )
            for (tag, scope_id, limits), counter in zip(scopes, counters, strict=True)
            if counter.window_start_ms is not None and counter.spend_nanos > 0
        ],
    )


async def restore_snapshot(store: QuotaStore, snapshot: SpendSnapshot, generation: str) -> int:
    """Add the snapshot's spend back into the store of `generation`; how many counters."""
    restored = 0
    for saved in snapshot.counters:
        restored += await store.restore_budget(
            saved.tag, saved.scope_id, saved.limits, saved.as_counter(), generation
        )
    return restored


def default_state_file(manifests: Path) -> Path:
    """Where standalone mode keeps the snapshot of a manifests folder without --state-file.

    Under $XDG_STATE_HOME/llmquota (~/.local/state/llmquota), one file per folder (named
    by a hash of its absolute path), and never in the folder itself: `kubectl apply -f
    DIR` reads every file there, hidden or not, and would refuse to apply the snapshot.
    """
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(manifests.resolve()).encode()).hexdigest()[:16]
    return Path(state_home) / "llmquota" / f"standalone-{digest}.json"


def write_snapshot(path: Path, snapshot: SpendSnapshot) -> None:
    """Replace the file atomically: a crash mid-write leaves the previous snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(snapshot.model_dump_json())
        partial.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def read_snapshot(path: Path) -> SpendSnapshot | None:
    """The snapshot in the file; None when there is none or it is unreadable (logged)."""
    try:
        return SpendSnapshot.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as error:
        logger.warning("state file %s unusable, starting without it: %s", path, error)
        return None
