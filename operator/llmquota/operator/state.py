"""The process context: what the operator holds between handler calls.

The factory (`llmquota.operator.factory`) builds one at startup; the services share it.

The Kubernetes objects themselves are in kopf indexes (cached from the watches, so
resolving a key costs no API call); what only the operator knows lives here: which hash
each ApiKey's policy was written under, the last status written per budget counter (to
re-seed Redis after it lost its data, and to notice a window reset), and recent spend
samples (for the forecast).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from llmquota.models import ApiKey, Budget, BudgetOverride, RateLimit, Team
from llmquota.operator.config import OperatorConfig
from llmquota.operator.rules.forecast import SpendSample
from llmquota.operator.rules.mirrored_objects import MirrorSource
from llmquota.operator.rules.status_view import Seed
from llmquota.operator.storage.kubernetes import KubernetesStorage
from llmquota.policy.limits import ResolvedPolicy
from llmquota.policy.resolve import NamespaceObjects
from llmquota.store import QuotaStore

__all__ = ["MEMO_KEY", "Gone", "Indexes", "KeyRecord", "OperatorState", "ScopeRef"]

MEMO_KEY = "llmquota"
Gone = tuple[str, str, str]
"""(kind, namespace, name) of an object being deleted, hidden from resolution."""
ScopeRef = tuple[str, str]
"""(hash tag, scope id) of one budget counter."""

ModelT = TypeVar("ModelT", Team, ApiKey, Budget, RateLimit, BudgetOverride)


@dataclass(slots=True)
class _Grouped(Generic[ModelT]):
    """A kopf index keyed by namespace, whose values are parsed models."""

    index: Mapping[str, Iterable[ModelT]]

    def of(self, namespace: str) -> list[ModelT]:
        return list(self.index.get(namespace, ()))

    def everywhere(self) -> list[ModelT]:
        return [obj for objs in self.index.values() for obj in objs]

    def named(self, namespace: str, name: str) -> ModelT | None:
        return next((obj for obj in self.of(namespace) if obj.metadata.name == name), None)


@dataclass(slots=True)
class Indexes:
    """The kopf indexes (live views): the five kinds by namespace, and keys by team and Secret."""

    teams: _Grouped[Team]
    keys: _Grouped[ApiKey]
    budgets: _Grouped[Budget]
    rate_limits: _Grouped[RateLimit]
    overrides: _Grouped[BudgetOverride]
    keys_by_team: Mapping[tuple[str, str], Iterable[ApiKey]]
    keys_by_secret: Mapping[tuple[str, str], Iterable[ApiKey]]

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> Indexes:
        """Pick the indexes out of a kopf handler's keyword arguments."""
        return cls(
            teams=_Grouped(kwargs["llmquota_teams"]),
            keys=_Grouped(kwargs["llmquota_apikeys"]),
            budgets=_Grouped(kwargs["llmquota_budgets"]),
            rate_limits=_Grouped(kwargs["llmquota_ratelimits"]),
            overrides=_Grouped(kwargs["llmquota_budgetoverrides"]),
            keys_by_team=kwargs["llmquota_apikeys_by_team"],
            keys_by_secret=kwargs["llmquota_apikeys_by_secret"],
        )

    def keys_using_secret(self, namespace: str, secret_name: str) -> list[ApiKey]:
        """The ApiKeys of a namespace whose key is in Secret `secret_name`."""
        return list(self.keys_by_secret.get((namespace, secret_name), ()))

    def team_keys(self, namespace: str, team: str) -> list[ApiKey]:
        """The ApiKeys of a Team."""
        return list(self.keys_by_team.get((namespace, team), ()))

    def objects(self, namespace: str, *, without: Gone | None = None) -> NamespaceObjects:
        """Budgets and RateLimits of a namespace; `without` hides one going away."""
        return NamespaceObjects(
            budgets={
                b.metadata.name: b
                for b in self.budgets.of(namespace)
                if without != ("Budget", namespace, b.metadata.name)
            },
            rate_limits={
                r.metadata.name: r
                for r in self.rate_limits.of(namespace)
                if without != ("RateLimit", namespace, r.metadata.name)
            },
            overrides=[
                o
                for o in self.overrides.of(namespace)
                if without != ("BudgetOverride", namespace, o.metadata.name)
            ],
        )


@dataclass(slots=True)
class KeyRecord:
    """What the operator last wrote to Redis for one ApiKey."""

    key_hash: str
    policy: ResolvedPolicy | None
    key_hint: str | None = None


@dataclass
class OperatorState:
    """Clients and bookkeeping shared by all handlers (one per operator process)."""

    config: OperatorConfig
    store: QuotaStore
    kubernetes: KubernetesStorage
    indexes: Indexes
    keys: dict[tuple[str, str], KeyRecord] = field(default_factory=dict)
    seeds: dict[ScopeRef, Seed] = field(default_factory=dict)
    spend_samples: dict[ScopeRef, list[SpendSample]] = field(default_factory=dict)
    """Recent spend per subject's own counter, for the forecast (see `forecast`)."""
    stale: set[tuple[str, str]] = field(default_factory=set)
    """ApiKeys whose refresh failed; the status sync applies them again."""
    conditions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The conditions last written, by object uid (see `status_patch`)."""
    mirror_sources: dict[MirrorSource, dict[str, Any] | None] = field(default_factory=dict)
    """The sidecar's ConfigMap and credential Secret as last read (None: absent)."""
    sources_loaded: bool = False
    mirror_namespaces: set[str] = field(default_factory=set)
    """Namespaces holding copies of the sources (see `services.mirroring`)."""
    mirror_pending: set[str] = field(default_factory=set)
    """Namespaces whose last mirroring failed."""
    background: list[asyncio.Task[None]] = field(default_factory=list)
    _locks: defaultdict[tuple[str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One lock per ApiKey: its handler and its Secret's handler never interleave."""
        return self._locks[(namespace, name)]

    def applying(self) -> set[tuple[str, str]]:
        """The ApiKeys whose policy is being resolved and written right now (lock held)."""
        return {ref for ref, lock in self._locks.items() if lock.locked()}

    def global_budget(self) -> Budget | None:
        """The --global-budget Budget, when configured and present."""
        if self.config.global_budget is None:
            return None
        namespace, name = self.config.global_budget
        return self.indexes.budgets.named(namespace, name)
