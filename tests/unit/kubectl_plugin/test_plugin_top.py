"""`top`'s order, status column and forecast columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llmquota.kubectl_plugin.subjects import SubjectView, subject_view
from llmquota.kubectl_plugin.top import sort_subjects, state, top_document, top_table

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _time(hours: float) -> str:
    return (NOW + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(name: str, **status: Any) -> SubjectView:
    return subject_view({"metadata": {"name": name, "namespace": "ns"}, "status": status}, "ApiKey")


def _condition(kind: str, status: str = "True", reason: str = "R") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason}


def test_forecast_sort_puts_the_soonest_exhaustion_first_and_none_last() -> None:
    keys = [
        _key("later", forecast={"exhaustsAt": _time(10)}),
        _key("never"),
        _key("soon", forecast={"exhaustsAt": _time(1), "burnRateUsdPerHour": 2}),
    ]
    assert [k.name for k in sort_subjects(keys, "forecast")] == ["soon", "later", "never"]
    assert [k.name for k in sort_subjects(keys, "burn")] == ["soon", "later", "never"]
    assert [k.name for k in sort_subjects(keys, "name")] == ["later", "never", "soon"]


def test_spend_sort_is_descending_and_remaining_ascending() -> None:
    keys = [_key("a", spend=1, remaining=9), _key("b", spend=5, remaining=5), _key("c")]
    assert [k.name for k in sort_subjects(keys, "spend")] == ["b", "a", "c"]
    assert [k.name for k in sort_subjects(keys, "remaining")] == ["b", "a", "c"]


def test_state_shows_what_is_wrong_first() -> None:
    assert state(_key("a")) == "-"
    assert state(_key("a", conditions=[_condition("Ready")])) == "Ready"
    not_ready = _key("a", conditions=[_condition("Ready", "False", "TeamNotFound")])
    assert state(not_ready) == "NotReady:TeamNotFound"
    troubled = _key(
        "a",
        conditions=[_condition("Ready"), _condition("BudgetAtRisk"), _condition("Expired"),
                    _condition("BudgetExceeded", "False")],
    )  # fmt: skip
    assert state(troubled) == "Expired,BudgetAtRisk"


def test_forecast_columns_when_the_operator_writes_them() -> None:
    key = _key(
        "hot", spend=3, maxBudget=10, remaining=7, budgetResetAt=_time(24),
        forecast={"burnRateUsdPerHour": 0.8, "exhaustsAt": _time(7.75)},
    )  # fmt: skip
    header, row = top_table([key], NOW, all_namespaces=True).splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"]
    assert row.split() == ["ns", "apikey/hot", "-", "3.00", "10.00", "7.00", "24h", "0.80", "7h45m",
                           "-"]  # fmt: skip
    item = top_document([key])["items"][0]
    assert item["forecast"] == {"burnRateUsdPerHour": 0.8, "exhaustsAt": _time(7.75)}
