"""Statuses of subjects with several windows and audited budgets, on the test bed with
real spend through admit.lua: every window listed with its spend and reset, kubectl get
showing the window that runs out first, BudgetExceeded naming the window (or the team's
window) that refuses, and an audited budget reported exhausted like an enforced one."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from tests.integration.operator.operator_helpers import Cluster, admit, spend, wait_for
from tests.integration.operator.test_operator_spend_status import (
    condition_is,
    events_about,
    key_policy,
)

from llmquota.policy.decision import Admitted, Refused
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

WINDOWED = {
    "maxBudget": 10,
    "budgetDuration": "30d",
    "timeZone": "Asia/Kolkata",
    "windows": [
        {"maxBudget": 2, "budgetDuration": "daily"},
        {"maxBudget": 1, "budgetDuration": "1h"},
    ],
}


def status_of(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    found = cluster.get(kind, name) or {}
    status: dict[str, Any] = found.get("status", {})
    return status


def columns(cluster: Cluster, kind: str, name: str) -> dict[str, str]:
    """`kubectl get` of one object as column -> value (by position: some are empty)."""
    header, row = cluster.kubectl("get", kind, name).splitlines()
    found = list(re.finditer(r"\S+", header))
    ends = [match.start() for match in found[1:]] + [len(row)]
    return {m.group(): row[m.start() : end].strip() for m, end in zip(found, ends, strict=True)}


def test_every_window_is_in_status_and_kubectl_get_shows_the_tightest(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    cluster.apply(
        {"kind": "ApiKey", "metadata": {"name": "windowed"}, "spec": {"budget": WINDOWED}}
    )
    policy = key_policy(cluster, db, "windowed")
    spend(redis_server.url, policy, 0.75)

    def listed() -> list[dict[str, Any]] | None:
        windows = status_of(cluster, "apikey", "windowed").get("windows", [])
        return windows if windows and windows[0]["spend"] == 0.75 else None

    windows = wait_for(listed, what="status.windows with the spend")
    assert [w["budgetDuration"] for w in windows] == ["30d", "daily", "1h"]
    assert [w["maxBudget"] for w in windows] == [10, 2, 1]
    assert [w["remaining"] for w in windows] == [9.25, 1.25, 0.25]
    assert windows[1]["resetAt"].endswith("T18:30:00Z")  # midnight in Kolkata (UTC+5:30)
    assert status_of(cluster, "apikey", "windowed")["tightestWindow"] == windows[2]
    shown = columns(cluster, "apikey", "windowed")
    assert (shown["WINDOW"], shown["REMAINING"], shown["BUDGET"]) == ("1h", "0.25", "1")

    spend(redis_server.url, policy, 0.25)
    refused = admit(redis_server.url, policy, 0.01)
    assert isinstance(refused, Refused)
    assert refused.scope_label == "key windowed (1h window)"
    exceeded = wait_for(
        lambda: condition_is(cluster, "apikey", "windowed", "BudgetExceeded", "True"),
        what="BudgetExceeded=True by the hour's window",
    )
    assert exceeded["message"].startswith("1h window: spend 1 USD")


def test_a_key_refused_by_its_teams_daily_window_says_so(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    team_budget = {"maxBudget": 100, "windows": [{"maxBudget": 0.5, "budgetDuration": "daily"}]}
    cluster.apply(
        {"kind": "Team", "metadata": {"name": "daily-team"}, "spec": {"budget": team_budget}},
        {"kind": "ApiKey", "metadata": {"name": "daily-key"}, "spec": {"team": "daily-team"}},
    )
    policy = key_policy(cluster, db, "daily-key")
    spend(redis_server.url, policy, 0.5)
    exceeded = wait_for(
        lambda: condition_is(cluster, "apikey", "daily-key", "BudgetExceeded", "True"),
        what="the key's BudgetExceeded=True",
    )
    assert exceeded["reason"] == "TeamBudgetExhausted"
    assert exceeded["message"].startswith("refused by team daily-team (daily window)")
    team = wait_for(
        lambda: condition_is(cluster, "team", "daily-team", "BudgetExceeded", "True"),
        what="the team's BudgetExceeded=True",
    )
    assert team["message"].startswith("daily window: spend 0.5 USD")


def test_an_audited_budget_is_reported_exhausted_and_never_refuses(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    audited = {"maxBudget": 0.5, "budgetDuration": "30d", "enforcement": "Audit"}
    cluster.apply({"kind": "ApiKey", "metadata": {"name": "audited"}, "spec": {"budget": audited}})
    policy = key_policy(cluster, db, "audited")
    spend(redis_server.url, policy, 0.5)
    served = admit(redis_server.url, policy, 0.01, settle_usd=0.01)
    assert isinstance(served, Admitted)
    assert served.audit is not None
    exceeded = wait_for(
        lambda: condition_is(cluster, "apikey", "audited", "BudgetExceeded", "True"),
        what="BudgetExceeded=True of the audited key",
    )
    assert exceeded["reason"] == "BudgetExhausted"
    assert exceeded["message"].endswith("enforcement Audit: reported, requests are not refused")
    event = wait_for(
        lambda: events_about(cluster, "BudgetExceeded", "audited") or None, what="its Event"
    )
    assert event[0]["type"] == "Warning"
