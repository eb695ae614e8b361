"""Teams and ApiKeys as the plugin reads them: plain data from the objects' JSON.

Read leniently, field by field, not through the resource models: the plugin may meet an
operator one version older or newer than itself, and a status field it does not know
(or one not written yet) must not stop it. Fields the operator may not write yet are
optional here and shown as "-": `status.forecast`, `status.windows`, `status.overrides`
and `status.workloadSpend` (`{workload name: USD}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Allowance",
    "ConditionView",
    "Forecast",
    "OverrideView",
    "SubjectKind",
    "SubjectView",
    "money",
    "parse_time",
    "subject_view",
]

SubjectKind = Literal["Team", "ApiKey"]


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time from an object; None when absent or not a time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def money(value: Any) -> float | None:
    """A USD amount from an object; None when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _spend_map(value: Any) -> dict[str, float]:
    return {
        str(name): amount
        for name, raw in _mapping(value).items()
        if (amount := money(raw)) is not None
    }


@dataclass(frozen=True, slots=True)
class Allowance:
    """One budget window as a status shows it: spent, limit, left and when it resets."""

    spend: float | None
    max_budget: float | None
    remaining: float | None
    reset_at: datetime | None
    duration: str | None = None

    @property
    def exhausted(self) -> bool:
        """Spend reached the limit (the operator's and the sidecar's rule: spend >= max)."""
        return (
            self.spend is not None
            and self.max_budget is not None
            and (self.spend >= self.max_budget)
        )


@dataclass(frozen=True, slots=True)
class Forecast:
    """`status.forecast`: the recent burn rate and when the budget runs out at it."""

    burn_rate_usd_per_hour: float | None = None
    exhausts_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConditionView:
    """One condition: status, reason and message."""

    status: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class OverrideView:
    """One active BudgetOverride listed in `status.overrides`."""

    name: str
    increase: float | None
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class SubjectView:
    """A Team or an ApiKey: its spec fields the plugin needs and its status."""

    kind: SubjectKind
    namespace: str
    name: str
    spec: Mapping[str, Any]
    allowance: Allowance
    windows: tuple[Allowance, ...] = ()
    forecast: Forecast = Forecast()
    model_spend: dict[str, float] = field(default_factory=dict)
    member_spend: dict[str, float] = field(default_factory=dict)
    workload_spend: dict[str, float] = field(default_factory=dict)
    overrides: tuple[OverrideView, ...] = ()
    conditions: dict[str, ConditionView] = field(default_factory=dict)

    @property
    def team(self) -> str | None:
        """The key's `spec.team`; a Team's own name."""
        if self.kind == "Team":
            return self.name
        team = self.spec.get("team")
        return str(team) if team else None

    @property
    def ref(self) -> str:
        """`team/NAME` or `apikey/NAME`, as kubectl names an object of a kind."""
        return f"{self.kind.lower()}/{self.name}"

    def holds(self, condition: str) -> bool:
        """Whether the condition is True."""
        found = self.conditions.get(condition)
        return found is not None and found.status == "True"


def _allowance(raw: Mapping[str, Any], *, reset_field: str) -> Allowance:
    return Allowance(
        spend=money(raw.get("spend")),
        max_budget=money(raw.get("maxBudget")),
        remaining=money(raw.get("remaining")),
        reset_at=parse_time(raw.get(reset_field)),
        duration=str(raw["budgetDuration"]) if raw.get("budgetDuration") else None,
    )


def _conditions(raw: Any) -> dict[str, ConditionView]:
    found: dict[str, ConditionView] = {}
    for item in raw if isinstance(raw, list) else []:
        condition = _mapping(item)
        if condition.get("type"):
            found[str(condition["type"])] = ConditionView(
                status=str(condition.get("status", "Unknown")),
                reason=str(condition.get("reason", "")),
                message=str(condition.get("message", "")),
            )
    return found


def subject_view(obj: Mapping[str, Any], kind: SubjectKind) -> SubjectView:
    """A Team's or an ApiKey's JSON (as the API server returns it) as a `SubjectView`."""
    metadata = _mapping(obj.get("metadata"))
    status = _mapping(obj.get("status"))
    forecast = _mapping(status.get("forecast"))
    windows = status.get("windows")
    overrides = status.get("overrides")
    return SubjectView(
        kind=kind,
        namespace=str(metadata.get("namespace", "default")),
        name=str(metadata.get("name", "")),
        spec=_mapping(obj.get("spec")),
        allowance=_allowance(status, reset_field="budgetResetAt"),
        windows=tuple(
            _allowance(_mapping(window), reset_field="resetAt")
            for window in (windows if isinstance(windows, list) else [])
        ),
        forecast=Forecast(
            burn_rate_usd_per_hour=money(forecast.get("burnRateUsdPerHour")),
            exhausts_at=parse_time(forecast.get("exhaustsAt")),
        ),
        model_spend=_spend_map(status.get("modelSpend")),
        member_spend=_spend_map(status.get("memberSpend")),
        workload_spend=_spend_map(status.get("workloadSpend")),
        overrides=tuple(
            OverrideView(
                name=str(_mapping(item).get("name", "")),
                increase=money(_mapping(item).get("increase")),
                expires=parse_time(_mapping(item).get("expires")),
            )
            for item in (overrides if isinstance(overrides, list) else [])
        ),
        conditions=_conditions(status.get("conditions")),
    )
