"""The store's exactness checks on a real three-primary Redis Cluster: the Lua against
its reference model with the global budget in a slot of its own, and processes racing
for a budget that spans two slots."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integration.store.scenario import CENT, api_key, attempt, budget, policy_for, team
from tests.integration.store.test_store_processes import race
from tests.integration.store.test_store_reference_model import (
    BUDGETS,
    CREATED,
    KEY_RATES,
    OPERATIONS,
    TEAM_RATES,
    run_against_reference,
)
from tests.support.redis_server import ClusterGroup

from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration


def _policies(
    global_max: float,
    team_budget: dict[str, Any] | None,
    team_rate: dict[str, Any] | None,
    key_rate: dict[str, Any] | None,
) -> list[ResolvedPolicy]:
    """Two keys of team t (one slot) under a global budget (another slot)."""
    team_spec: dict[str, Any] = {}
    if team_budget is not None:
        team_spec["budget"] = team_budget
    if team_rate is not None:
        team_spec["rateLimit"] = team_rate
    key_spec: dict[str, Any] = {"team": "t"}
    if key_rate is not None:
        key_spec["rateLimit"] = key_rate
    shared_team = team("t", created=CREATED, **team_spec)
    everyone = budget("everyone", created=CREATED, maxBudget=global_max)
    return [
        policy_for(api_key(name, created=CREATED, **key_spec), shared_team, global_budget=everyone)
        for name in ("k", "k2")
    ]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    global_max=st.sampled_from([0, 0.01, 0.03, 0.05]),
    team_budget=BUDGETS,
    team_rate=TEAM_RATES,
    key_rate=KEY_RATES,
    operations=OPERATIONS,
)
def test_lua_admission_across_slots_matches_the_reference_model(
    shared_cluster: ClusterGroup,
    global_max: float,
    team_budget: dict[str, Any] | None,
    team_rate: dict[str, Any] | None,
    key_rate: dict[str, Any] | None,
    operations: list[tuple[Any, ...]],
) -> None:
    shared_cluster.flush()
    policies = _policies(global_max, team_budget, team_rate, key_rate)
    asyncio.run(
        run_against_reference(shared_cluster.url, policies, operations, empty_counts_as_absent=True)
    )


@pytest.mark.slow
async def test_500_requests_from_8_processes_admit_exactly_the_global_budget(
    shared_cluster: ClusterGroup, cluster_store: QuotaStore
) -> None:
    """The global budget ($1) is the binding one, in its own slot; every admission also
    reserves in the team's slot, and each refusal there or here frees what it held."""
    everyone = budget("everyone", maxBudget=1)
    policy = policy_for(
        api_key("racer", team="racers"),
        team("racers", budget={"maxBudget": 5}),
        global_budget=everyone,
    )
    await cluster_store.put_policy(policy)

    outcomes = await race(shared_cluster.url, policy, "--estimate-nanos", str(CENT))

    admitted = [outcome for outcome in outcomes if outcome["admitted"]]
    assert {outcome["settled"] for outcome in admitted} == {1}
    assert {outcome["limit"] for outcome in outcomes if not outcome["admitted"]} <= {
        "max_budget",
        "key_share",
    }
    # A shared budget lets one key hold only half of what is left at once, so the race
    # can leave the last cent to be handed out once nothing is in flight.
    late = 0
    while (final := await attempt(cluster_store, policy)).admitted:
        assert await cluster_store.settle(final.request_id, CENT, 100) == 1
        late += 1
    assert final.refusal.scope_label == "the global budget"
    assert len(admitted) + late == 100
    counters = await cluster_store.read_budgets(
        [(scope.tag, scope.id) for scope in policy.scopes if scope.kind in ("global", "team")]
    )
    assert [(c.spend_nanos, c.reserved_nanos) for c in counters] == [(nanos(1), 0)] * 2
