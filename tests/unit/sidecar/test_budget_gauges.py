"""Budget gauges from counters: a gauge per configured scope and window, end users never
a label value, and one crossing per soft budget and window."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

import pytest
from prometheus_client import generate_latest

from llmquota.policy.limits import BudgetLimits, Scope, nanos
from llmquota.pricing import load_price_table
from llmquota.sidecar.budget_gauges import END_USER_RECENT_S, BudgetGauges
from llmquota.sidecar.metrics import SidecarMetrics
from llmquota.store import BudgetCounter, QuotaStore

DAY_MS = 86_400_000
NOW_MS = 10 * DAY_MS + 5


class CountersByScope:
    """Stands in for QuotaStore.read_budgets: counters by scope id."""

    def __init__(self) -> None:
        self.counters: dict[str, BudgetCounter] = {}

    async def read_budgets(self, scopes: Iterable[tuple[str, str]]) -> list[BudgetCounter]:
        return [self.counters.get(scope_id, BudgetCounter(None)) for _, scope_id in scopes]


def daily(max_usd: float, soft_usd: float | None = None) -> BudgetLimits:
    return BudgetLimits(
        max_nanos=nanos(max_usd),
        soft_nanos=None if soft_usd is None else nanos(soft_usd),
        window=f"fixed:{DAY_MS}",
    )


def spent(usd: float, reserved: float = 0, window_start_ms: int = 10 * DAY_MS) -> BudgetCounter:
    return BudgetCounter(window_start_ms, nanos(usd), nanos(reserved))


TEAM = Scope(kind="team", id="team/ns/qa", tag="ns/qa", label="team qa", budget=daily(10, 8))
MEMBER = Scope(kind="member", id="member/ns/qa/ana", tag="ns/qa", label="m", budget=daily(1))
UNCAPPED = Scope(kind="member", id="member/ns/qa/bo", tag="ns/qa", label="m",
                 budget=BudgetLimits(max_nanos=-1))  # fmt: skip
CUSTOMER = Scope(kind="end_user", id="team/ns/qa/user/customer-42", tag="ns/qa", label="e",
                 budget=daily(0.1, 0.05))  # fmt: skip


TEAM_LABELS = {
    "namespace": "ns",
    "kind": "team",
    "name": "qa",
    "window": "1d",
    "enforcement": "Enforce",
}
"""The labels of the team's remaining-budget series."""


def gauges() -> tuple[BudgetGauges, CountersByScope, SidecarMetrics]:
    counters = CountersByScope()
    metrics = SidecarMetrics.create(load_price_table(None))
    return BudgetGauges(cast(QuotaStore, counters), metrics), counters, metrics


def value(metrics: SidecarMetrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


async def test_each_scope_with_a_budget_has_its_remaining_by_window() -> None:
    gauge, counters, metrics = gauges()
    counters.counters |= {TEAM.id: spent(2, reserved=1), MEMBER.id: spent(0.25)}
    gauge.watch([TEAM, MEMBER, UNCAPPED])
    await gauge.refresh(NOW_MS)
    remaining = "llmquota_remaining_budget_usd"
    team = TEAM_LABELS
    assert value(metrics, remaining, **team) == 7  # reservations count as spent
    member = {
        "namespace": "ns",
        "kind": "member",
        "name": "qa/ana",
        "window": "1d",
        "enforcement": "Enforce",
    }
    assert value(metrics, remaining, **member) == 0.75
    assert b"qa/bo" not in generate_latest(metrics.registry)  # no cap, no soft: no gauge


async def test_a_counter_of_a_past_window_counts_as_empty() -> None:
    gauge, counters, metrics = gauges()
    counters.counters[TEAM.id] = spent(10, window_start_ms=9 * DAY_MS)
    gauge.watch([TEAM])
    await gauge.refresh(NOW_MS)
    labels = TEAM_LABELS
    assert value(metrics, "llmquota_remaining_budget_usd", **labels) == 10


async def test_a_crossing_is_counted_once_per_window() -> None:
    gauge, counters, metrics = gauges()
    labels = {"namespace": "ns", "kind": "team", "name": "qa"}
    gauge.watch([TEAM])
    for usd in (7, 8, 9):
        counters.counters[TEAM.id] = spent(usd)
        await gauge.refresh(NOW_MS)
    assert value(metrics, "llmquota_soft_budget_exceeded", **labels) == 1
    assert value(metrics, "llmquota_soft_budget_crossings_total", **labels) == 1
    counters.counters[TEAM.id] = spent(8.5, window_start_ms=11 * DAY_MS)
    await gauge.refresh(NOW_MS + DAY_MS)
    assert value(metrics, "llmquota_soft_budget_crossings_total", **labels) == 2


async def test_an_end_user_is_never_a_label_value() -> None:
    gauge, counters, metrics = gauges()
    counters.counters[CUSTOMER.id] = spent(0.06)
    gauge.watch([CUSTOMER])
    await gauge.refresh(NOW_MS)
    scraped = generate_latest(metrics.registry)
    assert b"customer-42" not in scraped
    owner = {"namespace": "ns", "kind": "end_user", "name": "qa"}
    assert value(metrics, "llmquota_soft_budget_crossings_total", **owner) == 1
    assert b"llmquota_remaining_budget_usd{" not in scraped


async def test_a_changed_policy_gives_the_gauge_its_new_budget() -> None:
    gauge, counters, metrics = gauges()
    counters.counters[TEAM.id] = spent(2)
    team = TEAM_LABELS
    for _ in range(3):  # the key's policy as cached: the same scope object every request
        gauge.watch([TEAM])
    await gauge.refresh(NOW_MS)
    assert value(metrics, "llmquota_remaining_budget_usd", **team) == 8
    raised = TEAM.model_copy(update={"budget": daily(20, 8)})  # the Team's budget raised
    gauge.watch([raised])
    await gauge.refresh(NOW_MS)
    assert value(metrics, "llmquota_remaining_budget_usd", **team) == 18


async def test_an_end_user_seen_again_stays_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    gauge, counters, metrics = gauges()
    counters.counters[CUSTOMER.id] = spent(0.06)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    gauge.watch([CUSTOMER])
    clock[0] += END_USER_RECENT_S + 1  # quiet for a while, then the same user again
    gauge.watch([CUSTOMER])
    await gauge.refresh(NOW_MS)
    owner = {"namespace": "ns", "kind": "end_user", "name": "qa"}
    assert value(metrics, "llmquota_soft_budget_crossings_total", **owner) == 1


async def test_a_workloads_counter_is_labelled_a_workload_not_a_key() -> None:
    """A keyless Pod's own counter stands where a key's would in admission (its scope kind
    is "key"), but the gauge says what it is: kind workload, named team/workload."""
    gauge, counters, metrics = gauges()
    drafter = Scope(
        kind="key",
        id="workload/ns/qa/deployment/drafter",
        tag="ns/qa",
        label="workload deployment/drafter of team qa",
        budget=daily(2),
    )
    counters.counters[drafter.id] = spent(0.5)
    gauge.watch([TEAM, drafter])
    await gauge.refresh(NOW_MS)
    labels = {"namespace": "ns", "name": "qa/deployment/drafter", "window": "1d"}
    remaining = "llmquota_remaining_budget_usd"
    assert value(metrics, remaining, kind="workload", enforcement="Enforce", **labels) == 1.5
    assert value(metrics, remaining, kind="key", enforcement="Enforce", **labels) is None
