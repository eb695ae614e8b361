"""The limits that apply to one ApiKey (its resolved policy), flattened for the hot path.

The operator (or the standalone loader) writes one per key hash into Redis; sidecars read
and cache them. Money is in integer nano-USD, so Lua compares exactly.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmquota.durations import Window, window_at, window_spec

__all__ = [
    "NANOS_PER_USD",
    "BudgetIncrease",
    "BudgetLimits",
    "EndUserTemplate",
    "LimitSet",
    "PolicyRefusal",
    "RateLimits",
    "ResolvedPolicy",
    "Scope",
    "ScopeKind",
    "WindowLimits",
    "duration_of",
    "first_problem",
    "nanos",
    "read_policy",
    "unreadable_refusal",
    "usd",
    "window_spec",
]

NANOS_PER_USD = 1_000_000_000

ScopeKind = Literal["global", "team", "key", "member", "end_user", "pool"]
"""`pool`: the shared counters of a referenced Dynamic RateLimit."""


def nanos(amount_usd: float) -> int:
    """USD to integer nano-USD, rounded to the nearest nano."""
    return round(amount_usd * NANOS_PER_USD)


def usd(amount_nanos: int) -> float:
    """Integer nano-USD to USD."""
    return amount_nanos / NANOS_PER_USD


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def duration_of(wire: str) -> str:
    """A window as a budgetDuration is written: `30d`, `90m`, `daily`, `monthly`, `none`."""
    spec = window_spec(wire)
    if spec.kind == "none":
        return "none"
    if spec.unit is not None:
        return spec.unit
    for unit, unit_ms in _DURATION_UNITS_MS:
        if spec.length_ms % unit_ms == 0:
            return f"{spec.length_ms // unit_ms}{unit}"
    return f"{spec.length_ms}ms"


_DURATION_UNITS_MS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


class BudgetIncrease(_Frozen):
    """One BudgetOverride on a budget: nano-USD added to its max until `expires_ms`."""

    name: str  # the BudgetOverride's name, for status and messages
    nanos: int
    expires_ms: int  # epoch ms; the admit script compares it with Redis' clock


class WindowLimits(_Frozen):
    """One window of a budget: its max in nano-USD and how it is cut."""

    max_nanos: int  # -1: count spend only, never refuse
    window: str = "none"  # WindowSpec.wire: fixed:<ms> | monthly | cal:<unit>:<zone> | none

    @property
    def duration(self) -> str:
        """The window as a budgetDuration is written."""
        return duration_of(self.window)


class BudgetLimits(_Frozen):
    """A budget as it applies to one scope: limits in nano-USD and how its windows fall.

    `max_nanos` over `window` is the main window (the one soft budget, model caps and
    status fields describe); `windows` are the further ones, each with its own counter,
    cut from the same anchor and raised by the same overrides.
    """

    max_nanos: int  # -1: count spend only, never refuse
    soft_nanos: int | None = None
    window: str = "none"  # WindowSpec.wire: fixed:<ms> | monthly | cal:<unit>:<zone> | none
    anchor_ms: int = 0
    model_max_nanos: dict[str, int] = Field(default_factory=dict)
    windows: list[WindowLimits] = Field(default_factory=list)
    increases: list[BudgetIncrease] = Field(default_factory=list)
    fail_open: bool = False  # failurePolicy Open: admitted uncounted while Redis is away
    audit: bool = False  # enforcement Audit: counted and reported, never refused

    def max_nanos_at(self, now_ms: int) -> int:
        """The max in force at `now_ms`: raised by every override not yet expired.

        admit.lua applies the same rule with Redis' clock; a count-only budget (-1)
        stays count-only, since an override raises a cap and cannot create one.
        """
        if self.max_nanos < 0:
            return self.max_nanos
        return self.raise_max(self.max_nanos, now_ms)

    def raise_max(self, max_nanos: int, now_ms: int) -> int:
        """`max_nanos` of one of this budget's windows, raised by the overrides in force
        at `now_ms`: a BudgetOverride raises every window by its increase."""
        if max_nanos < 0:
            return max_nanos
        return max_nanos + sum(i.nanos for i in self.increases if now_ms < i.expires_ms)

    def window_at(self, now_ms: int) -> Window:
        """The main window of this budget that contains `now_ms`."""
        return self.period_at(self.window, now_ms)

    def period_at(self, window: str, now_ms: int) -> Window:
        """The period of one of this budget's windows (a wire form) containing `now_ms`."""
        return window_at(window_spec(window), self.anchor_ms, now_ms)

    @property
    def all_windows(self) -> list[WindowLimits]:
        """The main window first, then the further ones."""
        return [WindowLimits(max_nanos=self.max_nanos, window=self.window), *self.windows]

    @property
    def duration(self) -> str:
        """The main window as a budgetDuration is written: `30d`, `90m`, `monthly`, `none`."""
        return duration_of(self.window)


class LimitSet(_Frozen):
    """Requests and tokens per minute and requests in flight; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None


class RateLimits(LimitSet):
    """A rate limit as it applies to one scope."""

    models: dict[str, LimitSet] = Field(default_factory=dict)
    dynamic: bool = False
    priority_reservation: dict[str, float] = Field(default_factory=dict)
    fail_open: bool = True  # failurePolicy Open, the rate limits' default
    audit: bool = False  # enforcement Audit: counted and reported, never refused


class Scope(_Frozen):
    """One subject whose counters a request is checked against and charged to."""

    kind: ScopeKind
    id: str  # stable identity in Redis key names, e.g. "team/ns/name"
    tag: str  # hash tag: all scopes of one team share it; a shared pool has its own
    label: str  # what error messages call it, e.g. "team qa-prod-bot"
    budget: BudgetLimits | None = None
    rate: RateLimits | None = None


class EndUserTemplate(_Frozen):
    """Limits each distinct `user` of a request body gets, instantiated per request."""

    owner_id: str
    owner_label: str
    tag: str
    budget: BudgetLimits | None = None
    rate: RateLimits | None = None


class PolicyRefusal(_Frozen):
    """Why a known key's policy is incomplete: its limits could not be resolved.

    The operator writes such a policy (instead of none) when, say, a Budget the key
    references is deleted or renamed, so the sidecar refuses the key for what is really
    wrong rather than calling it an unknown key.
    """

    reason: str  # CamelCase, as the ApiKey's Ready condition says: BudgetNotFound, ...
    message: str  # names the field, e.g. "spec.budgetRef: Budget 'tier' not found ..."


class ResolvedPolicy(_Frozen):
    """Everything that applies to one ApiKey, looked up by the key's hash.

    With `refusal` set the policy is incomplete: every request with the key is refused
    with that reason, and nothing else in it applies.
    """

    key_hash: str
    namespace: str
    key_name: str
    team: str | None = None
    user: str | None = None
    models: list[str] = Field(default_factory=list)  # allowed; empty = all
    expires_at: datetime | None = None
    blocked: bool = False
    priority: str | None = None
    scopes: list[Scope] = Field(default_factory=list)
    end_users: list[EndUserTemplate] = Field(default_factory=list)
    refusal: PolicyRefusal | None = None


UNREADABLE = "PolicyUnreadable"


def first_problem(error: ValidationError) -> str:
    """A stored policy's first validation problem, for a message: `field: what is wrong`."""
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "the policy"
    return f"{where}: {problem['msg']}"


def unreadable_refusal(what: str, detail: str) -> PolicyRefusal:
    """The refusal of a stored policy (`what`: "the stored policy") this version cannot
    read, `detail` being its first problem (`first_problem`)."""
    return PolicyRefusal(
        reason=UNREADABLE,
        message=(
            f"{what} cannot be read by this sidecar ({detail}): it was written by a newer "
            "operator (restart the Pod to get the new sidecar) or is damaged"
        ),
    )


def read_policy(encoded: bytes | str, key_hash: str) -> ResolvedPolicy:
    """A stored policy, or one that refuses its key when this version cannot read it.

    During a rolling upgrade the operator (new) writes fields the sidecars (old) do not
    know yet, and the models forbid unknown fields so that a typo never passes silently:
    such a key is refused with a 503 that names the problem (as an incomplete policy is)
    instead of failing the request with a 500. Namespace and key name are read loosely,
    so the message and the metrics still name the key.
    """
    try:
        return ResolvedPolicy.model_validate_json(encoded)
    except ValidationError as error:
        detail = first_problem(error)
    try:
        loose = json.loads(encoded)
    except ValueError:
        loose = {}
    if not isinstance(loose, dict):
        loose = {}
    return ResolvedPolicy(
        key_hash=key_hash,
        namespace=str(loose.get("namespace", "")),
        key_name=str(loose.get("key_name", "")),
        team=str(loose["team"]) if isinstance(loose.get("team"), str) else None,
        refusal=unreadable_refusal("the stored policy", detail),
    )
