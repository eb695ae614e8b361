"""A request and its policy, turned into the admit script's arguments.

The order of checks is the order of scopes (global, team, member, key, end users), so a
refusal names the widest scope that is exhausted.

Every budget but the key's own is shared with other keys, and there one key may hold in
flight at most `KEY_SHARE` of what the spend and the other keys' reservations leave
(docs/architecture.md, "Reservations"): a key cannot lock its teammates, or everyone under
the global budget, out with reservations while real spend is far below the limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmquota.policy import keyspace
from llmquota.policy.limits import BudgetLimits, RateLimits, ResolvedPolicy, Scope

__all__ = [
    "KEY_SHARE",
    "MAX_AMOUNT",
    "AdmissionCall",
    "RequestEstimate",
    "admission_call",
    "counter_amount",
    "dynamic_group",
    "scopes_for",
]

NO_LIMIT = -1
KEY_SHARE = 0.5
"""Of what a shared budget has left beside the other keys' reservations, the most one key
may hold in flight there."""
MAX_AMOUNT = 10**15
"""The most nano-USD ($1M) or tokens one admission or settlement adds to a counter (the
scripts' MAX_AMOUNT): sums stay exact integers in Lua and in Redis."""
KEY_FIELD_PREFIX = "k:"
UNLISTED_PRIORITY = "_default"
SHARED_POOL = "_all"


@dataclass(frozen=True, slots=True)
class RequestEstimate:
    """What is known of a request before it is forwarded."""

    model: str
    cost_nanos: int
    tokens: int
    end_user: str | None = None


@dataclass(frozen=True, slots=True)
class AdmissionCall:
    """KEYS and ARGV for admit.lua, and the scopes that its answer indexes into."""

    keys: list[str]
    spec_json: str
    scopes: list[Scope] = field(default_factory=list)


def scopes_for(policy: ResolvedPolicy, end_user: str | None) -> list[Scope]:
    """The policy's scopes plus one per end-user template when the body names a user."""
    if end_user is None:
        return list(policy.scopes)
    return [
        *policy.scopes,
        *(
            Scope(
                kind="end_user",
                id=f"{template.owner_id}/user/{end_user}",
                tag=template.tag,
                label=f"end user {end_user} of {template.owner_label}",
                budget=template.budget,
                rate=template.rate,
            )
            for template in policy.end_users
        ),
    ]


def dynamic_group(rate: RateLimits, priority: str | None) -> tuple[str, float]:
    """Which share of a Dynamic pool a key draws on: (group, weight of the pool).

    Without priorityReservation all active keys share the pool evenly; with it, a listed
    priority's keys split its share, and unlisted ones split what is left over.
    """
    reservation = rate.priority_reservation
    if not reservation:
        return SHARED_POOL, 1.0
    if priority in reservation:
        return priority, reservation[priority]
    return UNLISTED_PRIORITY, max(0.0, 1.0 - sum(reservation.values()))


def _increases(budget: BudgetLimits) -> dict[str, list[list[int]]]:
    """The budget's BudgetOverrides as `inc` pairs [nano-USD, expires ms], when it has any."""
    if not budget.increases:
        return {}
    return {"inc": [[increase.nanos, increase.expires_ms] for increase in budget.increases]}


def _or_none(value: int | None) -> int:
    return NO_LIMIT if value is None else value


def counter_amount(value: int) -> int:
    """`value` held to what a counter takes in one step, [0, MAX_AMOUNT]: a reservation of
    more than $1M is refused by any budget below that anyway."""
    return min(max(value, 0), MAX_AMOUNT)


def admission_call(
    policy: ResolvedPolicy, estimate: RequestEstimate, request_id: str, lease_ms: int
) -> AdmissionCall:
    """Build the admit script's call for one request."""
    keys: dict[str, int] = {}

    def key_index(name: str) -> int:
        return keys.setdefault(name, len(keys) + 1)

    model = estimate.model
    checks: list[dict[str, Any]] = []
    scopes = scopes_for(policy, estimate.end_user)
    for index, scope in enumerate(scopes):
        if scope.budget is not None:
            checks.append(
                {
                    "t": "b",
                    "s": index,
                    "k": key_index(keyspace.budget_key(scope.tag, scope.id)),
                    "max": scope.budget.max_nanos,
                    "w": scope.budget.window,
                    "a": scope.budget.anchor_ms,
                    "mm": scope.budget.model_max_nanos.get(model, NO_LIMIT),
                    "sh": scope.kind != "key",
                    **_increases(scope.budget),
                }
            )
        rate = scope.rate
        if rate is None:
            continue
        model_limits = rate.models.get(model)
        checks.append(
            {
                "t": "r",
                "s": index,
                "k": key_index(keyspace.rate_key(scope.tag, scope.id)),
                "rpm": _or_none(rate.rpm),
                "tpm": _or_none(rate.tpm),
                "mrpm": _or_none(model_limits.rpm if model_limits else None),
                "mtpm": _or_none(model_limits.tpm if model_limits else None),
            }
        )
        if rate.dynamic and (rate.rpm is not None or rate.tpm is not None):
            group, weight = dynamic_group(rate, policy.priority)
            checks.append(
                {
                    "t": "d",
                    "s": index,
                    "k": key_index(keyspace.pool_key(scope.tag, scope.id)),
                    "rpm": _or_none(rate.rpm),
                    "tpm": _or_none(rate.tpm),
                    "member": policy.key_hash,
                    "group": group,
                    "weight": weight,
                }
            )
        model_parallel = model_limits.max_parallel if model_limits else None
        if rate.max_parallel is not None or model_parallel is not None:
            checks.append(
                {
                    "t": "p",
                    "s": index,
                    "k": key_index(keyspace.parallel_key(scope.tag, scope.id)),
                    "max": _or_none(rate.max_parallel),
                    "mmax": _or_none(model_parallel),
                }
            )
    spec = {
        "id": request_id,
        "lease_ms": lease_ms,
        "model": model,
        "cost": counter_amount(estimate.cost_nanos),
        "tokens": counter_amount(estimate.tokens),
        "kf": KEY_FIELD_PREFIX + policy.key_hash,
        "share": KEY_SHARE,
        "checks": checks,
    }
    return AdmissionCall(
        keys=list(keys), spec_json=json.dumps(spec, separators=(",", ":")), scopes=scopes
    )
