"""Teams, Budgets and RateLimits: their own statuses, and the keys their changes affect.

A key depends on its team, on the Budgets and RateLimits it references and on those its
team references (`rules.dependents`); the global budget affects every key. A change or
a deletion re-resolves exactly those keys.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal

from llmquota.models import ApiKey, Budget, RateLimit, Team
from llmquota.operator.rules.conditions import Observation, no_events
from llmquota.operator.rules.dependents import (
    DependencyKind,
    keys_affected,
    keys_to_reresolve,
    subjects_referencing,
)
from llmquota.operator.rules.readiness import ready_observation
from llmquota.operator.services.keys import KeyService
from llmquota.operator.services.status_writer import StatusWriter
from llmquota.operator.services.workloads import WorkloadService
from llmquota.operator.state import OperatorState
from llmquota.operator.storage.kubernetes import KubeObject
from llmquota.policy.resolve import ResolutionError, resolve_team, resolve_workload_policy

__all__ = ["ReferenceService"]


class ReferenceService:
    """Ready and `subjects` of Teams, Budgets and RateLimits; their dependents refreshed."""

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

    async def team_changed(
        self,
        team: Team,
        status: Mapping[str, Any],
        *,
        into: MutableMapping[str, Any],
        resumed: bool,
    ) -> bool:
        """A Team's handler: its Ready into kopf's patch, its keys re-resolved; whether Ready.

        `resumed`: at a (re)start the keys resolve themselves in their own handlers.
        """
        ready = self.team_ready(team)
        fields = {"observedGeneration": team.metadata.generation}
        now = datetime.now(UTC)
        await self._status.write(KubeObject.of(team), status, fields, [ready], now=now, into=into)
        await self._workloads.apply(team)  # also at a (re)start: Redis may be a new one
        if not resumed:
            await self.reresolve("Team", team.metadata.namespace, team.metadata.name)
        return ready.status == "True"

    def team_ready(self, team: Team) -> Observation:
        """Ready of a Team: all its references resolve (as its keys' resolution checks)."""
        objects = self._state.indexes.objects(team.metadata.namespace)
        try:
            resolve_team(team, objects)
            resolve_workload_policy(team, objects)
        except ResolutionError as error:
            return ready_observation(error, "")
        return ready_observation(None, "references resolved")

    async def reference_changed(
        self,
        obj: Budget | RateLimit,
        status: Mapping[str, Any],
        *,
        into: MutableMapping[str, Any],
        resumed: bool,
    ) -> None:
        """A Budget's or RateLimit's handler: its status into kopf's patch, keys refreshed."""
        await self.write_reference_status(obj, status, into=into)
        if not resumed:
            await self.reresolve(_kind(obj), obj.metadata.namespace, obj.metadata.name)

    async def write_reference_status(
        self,
        obj: Budget | RateLimit,
        status: Mapping[str, Any],
        *,
        into: MutableMapping[str, Any] | None = None,
    ) -> None:
        """The status of a Budget or RateLimit: how many subjects use it, and Ready."""
        indexes, namespace = self._state.indexes, obj.metadata.namespace
        subjects = subjects_referencing(
            _kind(obj), obj.metadata.name, indexes.teams.of(namespace), indexes.keys.of(namespace)
        )
        await self._status.write(
            KubeObject.of(obj),
            status,
            {"subjects": subjects, "observedGeneration": obj.metadata.generation},
            [Observation("Ready", "True", "Valid", "spec is valid")],
            now=datetime.now(UTC),
            into=into,
            events=no_events,  # Ready is always True here: no flip worth an Event
        )

    async def reresolve(
        self, kind: DependencyKind, namespace: str, name: str, *, deleted: bool = False
    ) -> int:
        """Re-resolve every ApiKey that `kind/name` affects; how many.

        `deleted`: the object is going away, so resolution must not see it any more.
        """
        state = self._state
        affected: list[ApiKey]
        if kind == "Budget" and state.config.global_budget == (namespace, name):
            affected = state.indexes.keys.everywhere()
        else:
            affected = keys_affected(
                kind, name, state.indexes.teams.of(namespace), state.indexes.keys.of(namespace)
            )
        applied = keys_to_reresolve(affected, state.keys, state.applying())
        without = (kind, namespace, name) if deleted else None
        await self._keys.refresh(applied, without=without, known_key=True)
        if kind != "Team" or deleted:  # a changed Team applies its own (team_changed)
            await self._workloads.follow(kind, namespace, name, deleted=deleted)
        return len(applied)


def _kind(obj: Budget | RateLimit) -> Literal["Budget", "RateLimit"]:
    return "Budget" if isinstance(obj, Budget) else "RateLimit"
