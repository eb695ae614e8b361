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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llmquota.durations import calendar_bounds, window_spec
from llmquota.policy import keyspace
from llmquota.policy.limits import BudgetLimits, RateLimits, ResolvedPolicy, Scope, WindowLimits

__all__ = [
    "KEY_SHARE",
    "MAX_AMOUNT",
    "AdmissionCall",
    "Check",
    "RequestEstimate",
    "ScriptCall",
    "admission_call",
    "counter_amount",
    "counter_key",
    "dynamic_group",
    "lease_tag",
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
class Check:
    """One check of admit.lua on one counter: the counter's key, its hash tag, and the
    check's named fields (`kind` first; admit.lua's header lists them)."""

    counter: str
    tag: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """KEYS and ARGV[1] of one admit.lua run. KEYS are the hash tag's leases zset, the
    request's lease record there, then the counters the checks name by index; settle.lua
    and abort.lua are given the same KEYS, so the lease record stores only indices."""

    tag: str
    keys: list[str]
    spec_json: str


@dataclass(frozen=True, slots=True)
class AdmissionCall:
    """Everything admit.lua is asked for one request, and the scopes its answer indexes
    into. `request`: the fields every check shares (lease, model, cost, tokens, the key's
    field at shared budgets, its share there)."""

    request_id: str
    scopes: list[Scope]
    checks: list[Check]
    request: dict[str, Any]
    lease_tag: str

    def script_call(self, now_ms: int | None = None) -> ScriptCall:
        """The whole admission as one script run, its lease under the key's own hash tag:
        one round trip on a single Redis. `now_ms`: the caller's clock, around which the
        boundaries of calendar windows in a time zone are computed (the script has no zone
        data and picks the window its own clock falls in); needed only when there are."""
        return _script_call(self.lease_tag, self.request_id, self.checks, self.request, now_ms)

    def slot_calls(self, now_ms: int | None = None) -> list[ScriptCall]:
        """One script run per hash tag (a Redis Cluster runs a script in one slot), each
        with its own lease there, in the order of the scopes: the global budget's slot
        first, then the team's (its member, key and end users share its tag), then a
        Dynamic pool's."""
        by_tag: dict[str, list[Check]] = {}
        for check in self.checks:
            by_tag.setdefault(check.tag, []).append(check)
        return [
            _script_call(tag, self.request_id, checks, self.request, now_ms)
            for tag, checks in by_tag.items()
        ]


def _with_bounds(fields: dict[str, Any], now_ms: int | None) -> dict[str, Any]:
    """A budget check's fields, with its calendar window's boundaries when it needs them."""
    window = fields.get("window")
    if window is None or not window_spec(window).needs_bounds:
        return fields
    if now_ms is None:
        msg = f"a calendar window ({window}) needs the caller's clock to compute its bounds"
        raise ValueError(msg)
    return {**fields, "bounds": calendar_bounds(window_spec(window), now_ms)}


def _script_call(
    tag: str,
    request_id: str,
    checks: Sequence[Check],
    request: Mapping[str, Any],
    now_ms: int | None,
) -> ScriptCall:
    """The script run over `checks`, with its counters numbered once each from 1."""
    counters: dict[str, int] = {}
    specs = [
        {
            **_with_bounds(check.fields, now_ms),
            "counter": counters.setdefault(check.counter, len(counters) + 1),
        }
        for check in checks
    ]
    spec = {**request, "checks": specs}
    return ScriptCall(
        tag=tag,
        keys=[keyspace.leases_key(tag), keyspace.lease_key(tag, request_id), *counters],
        spec_json=_json(spec),
    )


def _json(spec: Mapping[str, Any]) -> str:
    """The spec as compact JSON: orjson's (every request encodes one), the standard
    library's for what orjson cannot encode (an integer past 64 bits)."""
    try:
        return orjson.dumps(spec).decode()
    except TypeError:
        return json.dumps(spec, separators=(",", ":"))


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
    """The budget's BudgetOverrides as `increases` pairs [nano-USD, expires ms], when it has any."""
    if not budget.increases:
        return {}
    return {"increases": [[increase.nanos, increase.expires_ms] for increase in budget.increases]}


def _or_none(value: int | None) -> int:
    return NO_LIMIT if value is None else value


def counter_amount(value: int) -> int:
    """`value` held to what a counter takes in one step, [0, MAX_AMOUNT]: a reservation of
    more than $1M is refused by any budget below that anyway."""
    return min(max(value, 0), MAX_AMOUNT)


def _audit(audit: bool) -> dict[str, bool]:
    """`audit: true` on the checks of an audited limit; absent (enforced) otherwise."""
    return {"audit": True} if audit else {}


def counter_key(scope: Scope, window_index: int, window: WindowLimits) -> str:
    """The counter of one window of a scope's budget: the main one (index 0) keeps the
    scope's budget counter, each further one has its own."""
    if window_index == 0:
        return keyspace.budget_key(scope.tag, scope.id)
    return keyspace.budget_window_key(scope.tag, scope.id, window.window)


def _budget_checks(scope: Scope, budget: BudgetLimits, index: int, model: str) -> list[Check]:
    """One check per window of the budget, the main one first: a request must fit every
    one. Model caps belong to the main window; overrides raise every window."""
    return [
        Check(
            counter=counter_key(scope, window_index, window),
            tag=scope.tag,
            fields={
                "kind": "budget",
                "scope": index,
                "max": window.max_nanos,
                "window": window.window,
                "anchor": budget.anchor_ms,
                "model_max": budget.model_max_nanos.get(model, NO_LIMIT)
                if window_index == 0
                else NO_LIMIT,
                "shared": scope.kind != "key",
                **({"window_index": window_index} if window_index else {}),
                **_increases(budget),
                **_audit(budget.audit),
            },
        )
        for window_index, window in enumerate(budget.all_windows)
    ]


def _rate_checks(
    scope: Scope, rate: RateLimits, index: int, model: str, policy: ResolvedPolicy
) -> list[Check]:
    """The per-minute check, then a Dynamic pool's share, then requests in flight."""
    model_limits = rate.models.get(model)
    checks = [
        Check(
            counter=keyspace.rate_key(scope.tag, scope.id),
            tag=scope.tag,
            fields={
                "kind": "rate",
                "scope": index,
                "rpm": _or_none(rate.rpm),
                "tpm": _or_none(rate.tpm),
                "model_rpm": _or_none(model_limits.rpm if model_limits else None),
                "model_tpm": _or_none(model_limits.tpm if model_limits else None),
                **_audit(rate.audit),
            },
        )
    ]
    if rate.dynamic and (rate.rpm is not None or rate.tpm is not None):
        group, weight = dynamic_group(rate, policy.priority)
        checks.append(
            Check(
                counter=keyspace.pool_key(scope.tag, scope.id),
                tag=scope.tag,
                fields={
                    "kind": "pool",
                    "scope": index,
                    "rpm": _or_none(rate.rpm),
                    "tpm": _or_none(rate.tpm),
                    "member": policy.key_hash,
                    "group": group,
                    "weight": weight,
                    **_audit(rate.audit),
                },
            )
        )
    model_parallel = model_limits.max_parallel if model_limits else None
    if rate.max_parallel is not None or model_parallel is not None:
        checks.append(
            Check(
                counter=keyspace.parallel_key(scope.tag, scope.id),
                tag=scope.tag,
                fields={
                    "kind": "parallel",
                    "scope": index,
                    "max": _or_none(rate.max_parallel),
                    "model_max": _or_none(model_parallel),
                    **_audit(rate.audit),
                },
            )
        )
    return checks


def admission_call(
    policy: ResolvedPolicy, estimate: RequestEstimate, request_id: str, lease_ms: int
) -> AdmissionCall:
    """Build the admit script's call for one request."""
    model = estimate.model
    checks: list[Check] = []
    scopes = scopes_for(policy, estimate.end_user)
    for index, scope in enumerate(scopes):
        if scope.budget is not None:
            checks.extend(_budget_checks(scope, scope.budget, index, model))
        if scope.rate is not None:
            checks.extend(_rate_checks(scope, scope.rate, index, model, policy))
    request = {
        "lease_ms": lease_ms,
        "model": model,
        "cost": counter_amount(estimate.cost_nanos),
        "tokens": counter_amount(estimate.tokens),
        "key_field": KEY_FIELD_PREFIX + policy.key_hash,
        "key_share": KEY_SHARE,
    }
    return AdmissionCall(
        request_id=request_id,
        scopes=scopes,
        checks=checks,
        request=request,
        lease_tag=lease_tag(policy),
    )


def lease_tag(policy: ResolvedPolicy) -> str:
    """Where a request's lease lives on one Redis: under the key's own hash tag (its
    team's, when it has one), so that its leases zset sits with its counters."""
    own = (scope.tag for scope in policy.scopes if scope.kind == "key")
    return next(own, policy.key_hash)
