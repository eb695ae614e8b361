"""A request and its policy, turned into the admit script's arguments.

The order of checks is the order of scopes (global, team, member, key, end users), so a
refusal names the widest scope that is exhausted.

Every budget but the key's own is shared with other keys, and there one key may hold in
flight at most `KEY_SHARE` of what the spend and the other keys' reservations leave
(docs/architecture.md, "Reservations"): a key cannot lock its teammates, or everyone under
the global budget, out with reservations while real spend is far below the limit.

What a call holds that depends only on the policy, the model and the end user (the
scopes, the checks, their JSON) is built once per policy object and reused
(`admission_plan`); per request only the amounts, the lease and its id are spliced in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llmquota.durations import BOUNDS_BEFORE, WindowSpec, calendar_bounds, window_spec
from llmquota.policy import keyspace
from llmquota.policy.limits import BudgetLimits, RateLimits, ResolvedPolicy, Scope, WindowLimits

__all__ = [
    "KEY_SHARE",
    "MAX_AMOUNT",
    "MAX_PLANS",
    "AdmissionCall",
    "AdmissionPlan",
    "Check",
    "RequestEstimate",
    "ScriptCall",
    "SlotPlan",
    "admission_call",
    "admission_plan",
    "counter_amount",
    "counter_key",
    "dynamic_group",
    "forget_plans",
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
    into: what this request brings (its id, reservation and lease) over the plan of its
    policy, model and end user, which it shares with their other requests."""

    request_id: str
    scopes: tuple[Scope, ...]
    plan: AdmissionPlan
    cost: int
    tokens: int
    lease_ms: int

    def script_call(self, now_ms: int | None = None) -> ScriptCall:
        """The whole admission as one script run, its lease under the key's own hash tag:
        one round trip on a single Redis. `now_ms`: the caller's clock, around which the
        boundaries of calendar windows in a time zone are computed (the script has no zone
        data and picks the window its own clock falls in); needed only when there are."""
        return self._script_call(self.plan.whole, now_ms)

    def slot_calls(self, now_ms: int | None = None) -> list[ScriptCall]:
        """One script run per hash tag (a Redis Cluster runs a script in one slot), each
        with its own lease there, in the order of the scopes: the global budget's slot
        first, then the team's (its member, key and end users share its tag), then a
        Dynamic pool's."""
        return [self._script_call(slot, now_ms) for slot in self.plan.slots]

    def _script_call(self, slot: SlotPlan, now_ms: int | None) -> ScriptCall:
        """The slot's run for this request: its lease record and amounts spliced into
        what the plan holds encoded (the spec's members in the order the script's
        header lists them)."""
        return ScriptCall(
            tag=slot.tag,
            keys=[slot.leases, keyspace.lease_key(slot.tag, self.request_id), *slot.counters],
            spec_json=(
                f'{{"lease_ms":{self.lease_ms:d}{self.plan.model_member},"cost":{self.cost:d},'
                f'"tokens":{self.tokens:d}{self.plan.key_members},"checks":'
                f"{slot.checks_json(now_ms)}}}"
            ),
        )


_ALWAYS = (-(2**63), 2**63)
"""The span of clocks a slot's checks hold for when none has calendar bounds."""


class SlotPlan:
    """One script run's checks, their counters numbered once each from 1, and their JSON
    kept encoded: the same for every request of a plan, until a calendar window's bounds
    move on (`checks_json`)."""

    __slots__ = ("_bounded", "_checks", "_encoded", "counters", "leases", "tag")

    def __init__(self, tag: str, checks: Sequence[Check]) -> None:
        numbers: dict[str, int] = {}
        self._checks = [
            (check.fields, numbers.setdefault(check.counter, len(numbers) + 1)) for check in checks
        ]
        self.tag = tag
        self.leases = keyspace.leases_key(tag)
        self.counters = list(numbers)
        self._bounded = any(_bounded_window(fields) is not None for fields, _ in self._checks)
        # The encoded checks and the clocks [from, until) they hold for, swapped in whole.
        self._encoded: tuple[str, int, int] | None = None

    def checks_json(self, now_ms: int | None) -> str:
        """The checks as JSON at `now_ms`; encoded again only when a calendar window's
        bounds (computed around `now_ms`) are not those of the last encoding."""
        encoded = self._encoded
        if encoded is None or not self._holds(encoded, now_ms):
            encoded = self._encode(now_ms)
            if self._holds(encoded, now_ms):
                self._encoded = encoded
        return encoded[0]

    def _holds(self, encoded: tuple[str, int, int], now_ms: int | None) -> bool:
        """Whether an encoding is right at `now_ms`: always without calendar bounds, else
        while `now_ms` is in the windows its bounds were computed around."""
        return not self._bounded or (now_ms is not None and encoded[1] <= now_ms < encoded[2])

    def _encode(self, now_ms: int | None) -> tuple[str, int, int]:
        """The checks as JSON, each budget check with its calendar window's bounds when it
        needs them, and the clocks those bounds are the same for: now's window's own."""
        valid_from, valid_until = _ALWAYS
        specs = []
        for fields, counter in self._checks:
            window = _bounded_window(fields)
            if window is None:
                specs.append({**fields, "counter": counter})
                continue
            if now_ms is None:
                msg = (
                    f"a calendar window ({window.wire}) needs the caller's clock to compute "
                    "its bounds"
                )
                raise ValueError(msg)
            bounds = calendar_bounds(window, now_ms)
            valid_from = max(valid_from, bounds[BOUNDS_BEFORE])
            valid_until = min(valid_until, bounds[BOUNDS_BEFORE + 1])
            specs.append({**fields, "bounds": bounds, "counter": counter})
        return _json(specs), valid_from, valid_until


def _bounded_window(fields: Mapping[str, Any]) -> WindowSpec | None:
    """A budget check's calendar window when the script needs its bounds handed in."""
    window = fields.get("window")
    if window is None:
        return None
    spec = window_spec(window)
    return spec if spec.needs_bounds else None


class AdmissionPlan:
    """What the admission of a request holds that depends only on its policy, model and
    end user: the scopes, the checks of each script run, the spec's members but the
    request's own. Holds `policy`, so that no other policy takes its identity (the
    plans' key) while the plan is cached."""

    __slots__ = ("_checks", "_slots", "key_members", "model_member", "policy", "scopes", "whole")

    def __init__(self, policy: ResolvedPolicy, model: str, end_user: str | None) -> None:
        self.policy = policy
        self.scopes = tuple(scopes_for(policy, end_user))
        checks: list[Check] = []
        for index, scope in enumerate(self.scopes):
            if scope.budget is not None:
                checks.extend(_budget_checks(scope, scope.budget, index, model))
            if scope.rate is not None:
                checks.extend(_rate_checks(scope, scope.rate, index, model, policy))
        self.model_member = "," + _members({"model": model})
        self.key_members = "," + _members(
            {"key_field": KEY_FIELD_PREFIX + policy.key_hash, "key_share": KEY_SHARE}
        )
        self.whole = SlotPlan(lease_tag(policy), checks)
        self._checks = checks
        self._slots: list[SlotPlan] | None = None

    @property
    def slots(self) -> list[SlotPlan]:
        """One run per hash tag, for a Redis Cluster (built on its first use, so a single
        Redis's sidecar holds only the whole run)."""
        if self._slots is None:
            by_tag: dict[str, list[Check]] = {}
            for check in self._checks:
                by_tag.setdefault(check.tag, []).append(check)
            self._slots = [SlotPlan(tag, tagged) for tag, tagged in by_tag.items()]
        return self._slots


MAX_PLANS = 1024
"""Plans kept (the oldest dropped first): end users come from request bodies. A plan of
five scopes with an end user holds about 6 KiB; a miss costs what every request cost
before plans (about 35 us at five scopes)."""
_plans: dict[tuple[int, str, str | None], AdmissionPlan] = {}


def admission_plan(policy: ResolvedPolicy, model: str, end_user: str | None) -> AdmissionPlan:
    """The plan for this policy object, model and end user: built on the first request,
    then reused. Keyed on the policy's identity (a changed policy is a new object, see
    the sidecar's PolicyCache), never on its key hash, so a replaced policy's plan is
    never served to its successor."""
    key = (id(policy), model, end_user)
    plan = _plans.get(key)
    if plan is not None and plan.policy is policy:
        return plan
    plan = AdmissionPlan(policy, model, end_user)
    if len(_plans) >= MAX_PLANS:
        del _plans[next(iter(_plans))]
    _plans[key] = plan
    return plan


def forget_plans() -> None:
    """Drop every plan: a policy changed, so the plans of the one it replaced (which hold
    it) would only take memory until they are pushed out."""
    _plans.clear()


def _members(members: Mapping[str, Any]) -> str:
    """JSON object members without the braces, to splice into a spec."""
    return _json(members)[1:-1]


def _json(spec: Mapping[str, Any] | Sequence[Any]) -> str:
    """Compact JSON: orjson's, the standard library's for what orjson cannot encode (an
    integer past 64 bits)."""
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
    plan = admission_plan(policy, estimate.model, estimate.end_user)
    return AdmissionCall(
        request_id=request_id,
        scopes=plan.scopes,
        plan=plan,
        cost=counter_amount(estimate.cost_nanos),
        tokens=counter_amount(estimate.tokens),
        lease_ms=lease_ms,
    )


def lease_tag(policy: ResolvedPolicy) -> str:
    """Where a request's lease lives on one Redis: under the key's own hash tag (its
    team's, when it has one), so that its leases zset sits with its counters."""
    own = (scope.tag for scope in policy.scopes if scope.kind == "key")
    return next(own, policy.key_hash)
