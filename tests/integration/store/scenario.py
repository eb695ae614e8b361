"""Building blocks of store scenarios: manifests to policies, a hand-driven clock, and
one admission attempt as the sidecar makes it (estimate -> admit -> decision).

Policies are built the way the operator builds them (manifest -> model ->
`resolve_key_policy`), so these tests exercise the same path as production.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmquota.models import ApiKey, Budget, BudgetOverride, RateLimit, Team, parse_resource
from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import Admitted, Refused, interpret_admit
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.policy.resolve import NamespaceObjects, resolve_key_policy
from llmquota.store import QuotaStore

__all__ = [
    "CENT",
    "CREATED",
    "DEFAULT_LEASE_MS",
    "NAMESPACE",
    "Attempt",
    "ManualClock",
    "api_key",
    "attempt",
    "budget",
    "budget_override",
    "epoch_ms",
    "policy_for",
    "rate_limit",
    "team",
]

NAMESPACE = "quota"
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
CENT = nanos(0.01)
DEFAULT_LEASE_MS = 30_000


def epoch_ms(moment: datetime) -> int:
    """A datetime as integer milliseconds since the epoch."""
    return int(moment.timestamp() * 1000)


class ManualClock:
    """The injected store clock: time moves only when a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now_ms = epoch_ms(now)

    def __call__(self) -> int:
        return self.now_ms

    def set(self, now: datetime) -> None:
        """Jump to `now`."""
        self.now_ms = epoch_ms(now)

    def advance(self, milliseconds: int) -> None:
        """Move forward by `milliseconds`."""
        self.now_ms += milliseconds


def _metadata(name: str, created: datetime) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "creationTimestamp": created.isoformat()}


def _manifest(kind: str, name: str, spec: dict[str, Any], created: datetime) -> dict[str, Any]:
    return {
        "apiVersion": "llmquota.dev/v1alpha1",
        "kind": kind,
        "metadata": _metadata(name, created),
        "spec": spec,
    }


def budget(name: str, created: datetime = CREATED, **spec: Any) -> Budget:
    """A Budget from camelCase spec fields, e.g. budget("tier", maxBudget=1)."""
    resource = parse_resource(_manifest("Budget", name, spec, created))
    assert isinstance(resource, Budget)
    return resource


def budget_override(name: str, created: datetime = CREATED, **spec: Any) -> BudgetOverride:
    """A BudgetOverride from camelCase spec fields."""
    resource = parse_resource(_manifest("BudgetOverride", name, spec, created))
    assert isinstance(resource, BudgetOverride)
    return resource


def rate_limit(name: str, created: datetime = CREATED, **spec: Any) -> RateLimit:
    """A RateLimit from camelCase spec fields, e.g. rate_limit("std", rpm=60)."""
    resource = parse_resource(_manifest("RateLimit", name, spec, created))
    assert isinstance(resource, RateLimit)
    return resource


def team(name: str, created: datetime = CREATED, **spec: Any) -> Team:
    """A Team from camelCase spec fields."""
    resource = parse_resource(_manifest("Team", name, spec, created))
    assert isinstance(resource, Team)
    return resource


def api_key(name: str, created: datetime = CREATED, **spec: Any) -> ApiKey:
    """An ApiKey from camelCase spec fields."""
    resource = parse_resource(_manifest("ApiKey", name, spec, created))
    assert isinstance(resource, ApiKey)
    return resource


def policy_for(
    key: ApiKey,
    key_team: Team | None = None,
    *,
    budgets: Iterable[Budget] = (),
    rate_limits: Iterable[RateLimit] = (),
    global_budget: Budget | None = None,
    overrides: Iterable[BudgetOverride] = (),
) -> ResolvedPolicy:
    """The key's resolved policy, its hash made from its name."""
    objects = NamespaceObjects(
        budgets={item.metadata.name: item for item in budgets},
        rate_limits={item.metadata.name: item for item in rate_limits},
        overrides=list(overrides),
    )
    return resolve_key_policy(
        key, hash_key(f"sk-{key.metadata.name}"), key_team, objects, global_budget
    )


@dataclass(frozen=True)
class Attempt:
    """One request's admission: its id (to settle or abort) and the decision."""

    request_id: str
    decision: Admitted | Refused

    @property
    def admitted(self) -> bool:
        """Whether the request was let through."""
        return isinstance(self.decision, Admitted)

    @property
    def refusal(self) -> Refused:
        """The refusal; fails the test when the request was admitted."""
        assert isinstance(self.decision, Refused), f"admitted: {self.decision}"
        return self.decision


async def attempt(
    store: QuotaStore,
    policy: ResolvedPolicy,
    *,
    model: str = "gpt-4o-mini",
    cost_nanos: int = CENT,
    tokens: int = 100,
    end_user: str | None = None,
    lease_ms: int = DEFAULT_LEASE_MS,
) -> Attempt:
    """Ask the store to admit one request, as the sidecar does."""
    request_id = uuid.uuid4().hex
    call = admission_call(
        policy, RequestEstimate(model, cost_nanos, tokens, end_user), request_id, lease_ms
    )
    return Attempt(request_id, interpret_admit(await store.admit(call), call))
