"""BudgetOverrides: their Active status and Events, and their target's keys re-resolved.

The increase itself is enforced by the admit script against `expires` on Redis' clock
(see `llmquota.policy.resolve.increases_for`), so its end never waits for the operator.
What the operator adds: the override's Active condition, the Events that mark its apply
and its expiry (`rules.overrides`), the target's `status.overrides`, and fresh policies
for the target's keys (an override applies within a second of its apply: one
re-resolution and the policy-change publication the sidecars follow).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from llmquota.models import ApiKey, BudgetOverride, Team
from llmquota.operator.rules.dependents import keys_to_reresolve
from llmquota.operator.rules.overrides import (
    active_overrides,
    override_events,
    override_observation,
)
from llmquota.operator.services.keys import KeyService
from llmquota.operator.services.status_writer import StatusWriter
from llmquota.operator.services.workloads import WorkloadService
from llmquota.operator.state import Gone, OperatorState
from llmquota.operator.storage.kubernetes import KubeObject
from llmquota.policy.resolve import ResolutionError, resolve_team

__all__ = ["OverrideService"]


class OverrideService:
    """Applies, withdraws and records the expiry of BudgetOverrides."""

    def __init__(
        self,
        state: OperatorState,
        status_writer: StatusWriter,
        keys: KeyService,
        workloads: WorkloadService,
    ) -> None:
        """Work on the process context `state`, re-applying keys through `keys` and Teams'
        workload policies through `workloads`."""
        self._state = state
        self._status = status_writer
        self._keys = keys
        self._workloads = workloads

    async def reconcile(
        self, override: BudgetOverride, status: Mapping[str, Any], *, into: MutableMapping[str, Any]
    ) -> None:
        """An override's handler: Active into kopf's patch, its Events, the target refreshed."""
        now = datetime.now(UTC)
        await self._write_status(override, status, now, into=into)
        await self.refresh_target(override, now)

    async def withdraw(self, override: BudgetOverride) -> None:
        """The override is deleted: its increase leaves the target's keys."""
        self._status.forget(override.metadata.uid)
        await self.refresh_target(override, datetime.now(UTC), gone=True)

    async def record_expiries(self, now: datetime) -> int:
        """Mark every override past its `expires` that still shows Active; how many.

        Called by the status sync every --status-interval: the sidecars stopped applying
        the increase at that instant already (the admit script compares `expires` with
        Redis' clock); this is the record of it (Active False, an Event, the target
        refreshed). A kopf daemon per override did it to the second, but daemons put a
        finalizer on their objects, and removing the operator first then left them
        Terminating.
        """
        marked = 0
        for override in self._state.indexes.overrides.everywhere():
            status = override.status
            shown = status.model_dump(by_alias=True, mode="json") if status else {}
            if override.spec.expires > now or shown.get("active") is False:
                continue
            await self._write_status(override, shown, datetime.now(UTC))
            await self.refresh_target(override, now)
            marked += 1
        return marked

    async def _write_status(
        self,
        override: BudgetOverride,
        status: Mapping[str, Any],
        now: datetime,
        *,
        into: MutableMapping[str, Any] | None = None,
    ) -> None:
        target = self.target_of(override)
        capped = target is not None and self._target_capped(target)
        observation = override_observation(override, target is not None, capped, now)
        fields = {
            "active": observation.status == "True",
            "observedGeneration": override.metadata.generation,
        }
        await self._status.write(
            KubeObject.of(override),
            status,
            fields,
            [observation],
            now=now,
            into=into,
            events=override_events,
        )

    async def refresh_target(
        self, override: BudgetOverride, now: datetime, *, gone: bool = False
    ) -> None:
        """Re-resolve the target's keys and rewrite its `status.overrides`.

        `gone`: the override is being deleted, so resolution must not see it any more.
        """
        state = self._state
        target = self.target_of(override)
        if target is None:
            return
        namespace, name = override.metadata.namespace, override.metadata.name
        without: Gone | None = ("BudgetOverride", namespace, name) if gone else None
        if isinstance(target, ApiKey):
            keys = [target]
        else:
            keys = state.indexes.team_keys(namespace, target.metadata.name)
        applied = keys_to_reresolve(keys, state.keys, state.applying())
        await self._keys.refresh(applied, without=without, known_key=True)
        await self._workloads.follow("BudgetOverride", namespace, name, deleted=gone)
        remaining = [
            o
            for o in state.indexes.overrides.of(namespace)
            if not (gone and o.metadata.name == name)
        ]
        listed = active_overrides(remaining, target, now)
        await self._status.replace_fields(KubeObject.of(target), {"overrides": listed})

    def target_of(self, override: BudgetOverride) -> ApiKey | Team | None:
        """The ApiKey or Team the override names, from the operator's indexes."""
        namespace, name = override.metadata.namespace, override.spec.target.name
        if override.spec.target.kind == "ApiKey":
            return self._state.indexes.keys.named(namespace, name)
        return self._state.indexes.teams.named(namespace, name)

    def _target_capped(self, target: ApiKey | Team) -> bool:
        """Whether the target has a maxBudget an override can raise (count-only has none)."""
        state = self._state
        if isinstance(target, ApiKey):
            record = state.keys.get((target.metadata.namespace, target.metadata.name))
            policy = None if record is None else record.policy
            if policy is None:
                return target.spec.budget is not None or target.spec.budget_ref is not None
            own = next((scope for scope in policy.scopes if scope.kind == "key"), None)
            return own is not None and own.budget is not None and own.budget.max_nanos >= 0
        try:
            resolved = resolve_team(target, state.indexes.objects(target.metadata.namespace))
        except ResolutionError:
            return False
        return resolved.scope.budget is not None and resolved.scope.budget.max_nanos >= 0
