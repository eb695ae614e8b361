"""What statuses say about real spend (admitted and settled through admit.lua, as a
sidecar would): which scope refuses a key, reservations, resets worth telling, and the
forecast with its BudgetAtRisk condition, Event and metric."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from tests.integration.operator.operator_helpers import Cluster, admit, spend, wait_for

from llmquota.policy import keyspace
from llmquota.policy.decision import Refused
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

FORECAST_SPAN = 4.0
"""--forecast-span of this module's operator: a forecast after a second of spend."""


def key_policy(cluster: Cluster, db: redis.Redis, name: str) -> ResolvedPolicy:
    """Wait for the ApiKey to be Ready and its policy written; that policy."""
    wait_for(lambda: condition_is(cluster, "apikey", name, "Ready", "True"), what=f"{name} Ready")
    secret = cluster.get("secret", name)
    assert secret is not None
    key_hash = hash_key(base64.b64decode(secret["data"]["key"]).decode())

    def written() -> ResolvedPolicy | None:
        raw = db.get(keyspace.policy_key(key_hash))
        return None if raw is None else ResolvedPolicy.model_validate_json(raw)

    return wait_for(written, what=f"policy of {name}")


def condition_is(
    cluster: Cluster, kind: str, name: str, type_: str, status: str
) -> dict[str, Any] | None:
    found = cluster.condition(kind, name, type_)
    return found if found is not None and found["status"] == status else None


def events_about(cluster: Cluster, reason: str, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.events(reason) if e["involvedObject"]["name"] == name]


def test_a_key_refused_by_its_team_budget_says_so(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    cluster.apply(
        {"kind": "Team", "metadata": {"name": "small"}, "spec": {"budget": {"maxBudget": 1}}},
        {
            "kind": "ApiKey",
            "metadata": {"name": "roomy"},
            "spec": {"team": "small", "budget": {"maxBudget": 100}},
        },
    )
    policy = key_policy(cluster, db, "roomy")
    spend(redis_server.url, policy, 1.0)
    refused = admit(redis_server.url, policy, 0.01)
    assert isinstance(refused, Refused)
    assert refused.scope_label == "team small"
    exceeded = wait_for(
        lambda: condition_is(cluster, "apikey", "roomy", "BudgetExceeded", "True"),
        what="the key's BudgetExceeded=True",
    )
    assert exceeded["reason"] == "TeamBudgetExhausted"
    assert "team small" in exceeded["message"]
    key = cluster.get("apikey", "roomy")
    assert key is not None
    assert key["status"]["remaining"] == 99  # its own budget is not what refuses it


def test_reservations_in_flight_count_as_admission_counts_them(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    cluster.apply(
        {"kind": "ApiKey", "metadata": {"name": "inflight"}, "spec": {"budget": {"maxBudget": 1}}}
    )
    policy = key_policy(cluster, db, "inflight")
    spend(redis_server.url, policy, 0.5)
    admit(redis_server.url, policy, 0.6)  # admitted, still in flight (reserved, unsettled)
    refused = admit(redis_server.url, policy, 0.01)
    assert isinstance(refused, Refused), "admission refuses: 0.5 spent + 0.6 reserved"
    exceeded = wait_for(
        lambda: condition_is(cluster, "apikey", "inflight", "BudgetExceeded", "True"),
        what="BudgetExceeded=True while spend alone is below maxBudget",
    )
    assert exceeded["reason"] == "BudgetExhausted"
    assert "0.6 USD reserved in flight" in exceeded["message"]


def test_a_window_without_spend_resets_quietly(cluster: Cluster) -> None:
    cluster.apply(
        {
            "kind": "ApiKey",
            "metadata": {"name": "idle"},
            "spec": {"budget": {"maxBudget": 1, "budgetDuration": "1s"}},
        }
    )
    shown: set[str] = set()

    def three_resets() -> bool:
        status = (cluster.get("apikey", "idle") or {}).get("status", {})
        if status.get("budgetResetAt"):
            shown.add(status["budgetResetAt"])
        return len(shown) >= 4

    wait_for(three_resets, timeout=15, what="three resets shown")
    assert events_about(cluster, "BudgetReset", "idle") == []


def test_a_team_reset_is_one_event_with_its_members_in_it(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    cluster.apply(
        {
            "kind": "Team",
            "metadata": {"name": "crew"},
            "spec": {
                "budget": {"maxBudget": 100, "budgetDuration": "3s"},
                "members": [{"user": "ann", "maxBudgetInTeam": 50}, {"user": "bob"}],
            },
        },
        {
            "kind": "ApiKey",
            "metadata": {"name": "ann-key"},
            "spec": {"team": "crew", "user": "ann"},
        },
        {
            "kind": "ApiKey",
            "metadata": {"name": "bob-key"},
            "spec": {"team": "crew", "user": "bob"},
        },
    )
    ann, bob = key_policy(cluster, db, "ann-key"), key_policy(cluster, db, "bob-key")

    def reset_at() -> str | None:
        shown = (cluster.get("team", "crew") or {}).get("status", {}).get("budgetResetAt")
        return str(shown) if shown else None

    def next_window(after: str | None) -> str:
        def moved() -> str | None:
            shown = reset_at()
            return shown if shown not in (None, after) else None

        return wait_for(moved, timeout=10, what="the next window")

    # Spend early in a window, so the status sync sees it before the window ends.
    fresh = next_window(wait_for(reset_at, what="a window shown"))
    spend(redis_server.url, ann, 0.25)
    spend(redis_server.url, bob, 0.25)
    wait_for(
        lambda: (
            (cluster.get("team", "crew") or {}).get("status", {}).get("memberSpend", {})
            == {"ann": 0.25, "bob": 0.25}
        ),
        timeout=5,
        what="the team's status shows the spend",
    )
    # Two windows end: one with spend (one Event, team and members in it), one without.
    next_window(next_window(fresh))
    (event,) = events_about(cluster, "BudgetReset", "crew")
    assert "0.5 USD was spent" in event["message"]
    for key in ("ann-key", "bob-key"):
        assert events_about(cluster, "BudgetReset", key) == []


def exhausts_in(namespace: str, kind: str, name: str) -> float | None:
    labels = {"namespace": namespace, "kind": kind, "name": name}
    return REGISTRY.get_sample_value("llmquota_budget_exhausts_in_seconds", labels)


def test_burning_fast_forecasts_exhaustion_before_the_reset(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    cluster.apply(
        {
            "kind": "Team",
            "metadata": {"name": "hot"},
            "spec": {"budget": {"maxBudget": 1000, "budgetDuration": "1h"}},
        },
        {
            "kind": "ApiKey",
            "metadata": {"name": "burner"},
            "spec": {"team": "hot", "budget": {"maxBudget": 100, "budgetDuration": "1h"}},
        },
    )
    policy = key_policy(cluster, db, "burner")

    def at_risk() -> dict[str, Any] | None:
        spend(redis_server.url, policy, 0.1)  # real spend, a request per poll
        return condition_is(cluster, "apikey", "burner", "BudgetAtRisk", "True")

    risk = wait_for(at_risk, timeout=20, what="BudgetAtRisk=True")
    assert risk["reason"] == "ExhaustsBeforeReset"
    status = cluster.get("apikey", "burner")["status"]  # type: ignore[index]
    forecast = status["forecast"]
    assert forecast["burnRateUsdPerHour"] > 0
    assert forecast["exhaustsAt"] < status["budgetResetAt"]
    seconds = exhausts_in(cluster.namespace, "ApiKey", "burner")
    assert seconds is not None
    assert 0 < seconds < 3600
    wait_for(lambda: events_about(cluster, "BudgetAtRisk", "burner"), what="BudgetAtRisk Event")
    team = wait_for(
        lambda: (cluster.get("team", "hot") or {}).get("status", {}).get("forecast"),
        what="the team's forecast",
    )
    assert team["burnRateUsdPerHour"] > 0
    # Spending stops: the risk is gone, and after a span without spend so is the rate.
    wait_for(
        lambda: condition_is(cluster, "apikey", "burner", "BudgetAtRisk", "False"),
        timeout=15,
        what="BudgetAtRisk=False once the spending stopped",
    )
    calm = wait_for(
        lambda: (
            (c := cluster.condition("apikey", "burner", "BudgetAtRisk"))
            and c["reason"] == "NotSpending"
            and c
        ),
        timeout=15,
        what="no burn over the last span",
    )
    assert calm["status"] == "False"
    assert len(events_about(cluster, "BudgetAtRisk", "burner")) == 1  # one per flip
    assert exhausts_in(cluster.namespace, "ApiKey", "burner") is None
