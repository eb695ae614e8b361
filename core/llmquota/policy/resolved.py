"""The resolved policy: everything that applies to one ApiKey, flattened for the hot path.

The operator (or the standalone loader) writes one per key hash into Redis; sidecars read
and cache them. Money is in integer nano-USD, so Lua compares exactly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NANOS_PER_USD",
    "BudgetLimits",
    "EndUserTemplate",
    "LimitSet",
    "RateLimits",
    "ResolvedPolicy",
    "Scope",
    "ScopeKind",
    "nanos",
    "usd",
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


class BudgetLimits(_Frozen):
    """A budget as it applies to one scope: limits in nano-USD and how its windows fall."""

    max_nanos: int  # -1: count spend only, never refuse
    soft_nanos: int | None = None
    window: str = "none"  # WindowSpec.wire: fixed:<ms> | monthly | none
    anchor_ms: int = 0
    model_max_nanos: dict[str, int] = Field(default_factory=dict)


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


class ResolvedPolicy(_Frozen):
    """Everything that applies to one ApiKey, looked up by the key's hash."""

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
