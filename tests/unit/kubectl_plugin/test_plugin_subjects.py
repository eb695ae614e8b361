"""Reading Teams and ApiKeys leniently: fields not written yet, or of another type, are
absent rather than errors."""

from __future__ import annotations

from datetime import UTC, datetime

from llmquota.kubectl_plugin.subjects import parse_time, subject_view

TEAM = {
    "metadata": {"name": "qa", "namespace": "prod"},
    "spec": {"budget": {"maxBudget": 100}},
    "status": {
        "spend": 60,
        "maxBudget": 100,
        "remaining": 40,
        "budgetResetAt": "2026-12-02T00:00:00Z",
        "modelSpend": {"gpt-4o": 60, "bad": "x"},
        "memberSpend": {"ishaan": 1.5},
        "workloadSpend": {"chatbot": 42},
        "windows": [
            {"budgetDuration": "30d", "maxBudget": 100, "spend": 60, "remaining": 40,
             "resetAt": "2026-12-02T00:00:00Z"},
            {"budgetDuration": "1d", "maxBudget": 2, "spend": 2, "remaining": 0,
             "resetAt": "2026-12-01T12:00:00Z"},
        ],
        "forecast": {"burnRateUsdPerHour": 0.8, "exhaustsAt": "2026-12-01T20:00:00Z"},
        "overrides": [{"name": "launch", "increase": 50, "expires": "2026-12-08T00:00:00Z"}],
        "conditions": [
            {"type": "BudgetAtRisk", "status": "True", "reason": "ExhaustsBeforeReset",
             "message": "at 0.8 USD/h", "lastTransitionTime": "2026-12-01T00:00:00Z"},
        ],
    },
}  # fmt: skip


def test_every_status_field() -> None:
    team = subject_view(TEAM, "Team")
    assert (team.namespace, team.name, team.ref, team.team) == ("prod", "qa", "team/qa", "qa")
    assert team.allowance.spend == 60
    assert team.allowance.reset_at == datetime(2026, 12, 2, tzinfo=UTC)
    assert team.model_spend == {"gpt-4o": 60}
    assert team.member_spend == {"ishaan": 1.5}
    assert team.workload_spend == {"chatbot": 42}
    assert [window.duration for window in team.windows] == ["30d", "1d"]
    assert [window.exhausted for window in team.windows] == [False, True]
    assert team.forecast.burn_rate_usd_per_hour == 0.8
    assert team.forecast.exhausts_at == datetime(2026, 12, 1, 20, tzinfo=UTC)
    assert team.overrides[0].name == "launch"
    assert team.overrides[0].increase == 50
    assert team.holds("BudgetAtRisk")
    assert not team.holds("Ready")


def test_an_object_without_status() -> None:
    key = subject_view({"metadata": {"name": "k"}, "spec": {"team": "qa"}}, "ApiKey")
    assert key.namespace == "default"
    assert key.team == "qa"
    assert key.ref == "apikey/k"
    assert key.allowance.spend is None
    assert not key.allowance.exhausted
    assert key.forecast.exhausts_at is None
    assert key.windows == ()
    assert key.conditions == {}


def test_wrong_types_are_absent() -> None:
    key = subject_view(
        {"metadata": {"name": "k"}, "spec": [],
         "status": {"spend": True, "windows": "no", "forecast": 3, "conditions": [1, {}]}},
        "ApiKey",
    )  # fmt: skip
    assert key.allowance.spend is None
    assert key.windows == ()
    assert key.forecast.burn_rate_usd_per_hour is None
    assert key.conditions == {}
    assert key.team is None


def test_parse_time() -> None:
    assert parse_time("2026-12-01T00:00:00Z") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time("2026-12-01T00:00:00") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time("soon") is None
    assert parse_time(None) is None
