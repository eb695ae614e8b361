"""Teams' workload policies on the API-server test bed: written when a Team selects
workloads, rewritten when its workload Budget changes, withdrawn with the Team; spend of
the workloads (admitted and settled as a sidecar would) in `status.workloadSpend`."""

from __future__ import annotations

import asyncio

import pytest
import redis
from tests.integration.operator.operator_helpers import Cluster, spend, wait_for

from llmquota.policy import keyspace
from llmquota.policy.identity import PodIdentity, WorkloadPolicy, workload_policy_for
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis, QuotaStore
from llmquota.store.workloads import note_workload

pytestmark = pytest.mark.integration


def _written(db: redis.Redis, namespace: str, team: str) -> WorkloadPolicy | None:
    raw = db.hget(keyspace.workload_policies_key(namespace), team)
    return None if raw is None else WorkloadPolicy.model_validate_json(raw)


def _charged(redis_url: str, policy: ResolvedPolicy, usd: float) -> None:
    """Spend through the workload's policy, and note the workload as its sidecar does."""
    spend(redis_url, policy, usd)

    async def note() -> None:
        store = QuotaStore.from_url(redis_url)
        try:
            team_scope = policy.scopes[0]
            await note_workload(store, team_scope.tag, team_scope.id, policy.scopes[-1].id)
        finally:
            await store.close()

    asyncio.run(note())


def test_a_selecting_team_gets_a_workload_policy_and_its_workloads_spend_shows(
    cluster: Cluster, db: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    namespace = cluster.namespace
    cluster.apply(
        {"kind": "Budget", "metadata": {"name": "per-app"}, "spec": {"maxBudget": 1}},
        {
            "kind": "Team",
            "metadata": {"name": "apps"},
            "spec": {
                "budget": {"maxBudget": 100},
                "rateLimit": {"maxParallelRequests": 3},
                "workloadSelector": {"matchLabels": {"app": "chatbot"}},
                "workloadBudgetRef": {"name": "per-app"},
            },
        },
    )
    written = wait_for(lambda: _written(db, namespace, "apps"), what="the workload policy")
    assert written.workload_budget.max_nanos == 1_000_000_000
    assert written.team_policy.refusal is None

    identity = PodIdentity(namespace, {"app": "chatbot"}, "deployment/chatbot")
    chatbot = workload_policy_for(identity, [written])
    assert chatbot is not None
    other = workload_policy_for(
        PodIdentity(namespace, {"app": "chatbot"}, "cronjob/nightly"), [written]
    )
    assert other is not None
    _charged(redis_server.url, chatbot, 0.5)
    _charged(redis_server.url, other, 0.25)

    def shown() -> dict[str, float] | None:
        team = cluster.get("team", "apps") or {}
        spent = (team.get("status") or {}).get("workloadSpend") or {}
        return spent if len(spent) == 2 else None

    assert wait_for(shown, what="status.workloadSpend") == {
        "deployment/chatbot": 0.5,
        "cronjob/nightly": 0.25,
    }

    # The workload Budget changes: the policy follows, without touching the Team.
    cluster.apply({"kind": "Budget", "metadata": {"name": "per-app"}, "spec": {"maxBudget": 2}})
    wait_for(
        lambda: (
            (p := _written(db, namespace, "apps")) is not None
            and p.workload_budget.max_nanos == 2_000_000_000
        ),
        what="the raised workload budget",
    )


def test_a_missing_workload_budget_refuses_and_a_deleted_team_withdraws(
    cluster: Cluster, db: redis.Redis
) -> None:
    namespace = cluster.namespace
    cluster.apply(
        {
            "kind": "Team",
            "metadata": {"name": "orphaned"},
            "spec": {"workloadSelector": {}, "workloadBudgetRef": {"name": "not-yet"}},
        }
    )
    refusing = wait_for(lambda: _written(db, namespace, "orphaned"), what="the policy")
    assert refusing.team_policy.refusal is not None
    assert refusing.team_policy.refusal.reason == "BudgetNotFound"
    assert "spec.workloadBudgetRef" in refusing.team_policy.refusal.message

    cluster.apply({"kind": "Budget", "metadata": {"name": "not-yet"}, "spec": {"maxBudget": 1}})
    wait_for(
        lambda: (
            (p := _written(db, namespace, "orphaned")) is not None and p.team_policy.refusal is None
        ),
        what="the policy complete once the Budget exists",
    )
    cluster.kubectl("delete", "team", "orphaned")
    wait_for(
        lambda: _written(db, namespace, "orphaned") is None or None,
        what="the workload policy withdrawn",
    )
