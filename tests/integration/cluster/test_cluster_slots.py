"""One admission on a real three-primary Redis Cluster: a team's counters share one hash
slot, the global budget has its own, and each script runs in one slot with every key it
touches in its KEYS."""

from __future__ import annotations

import uuid

import pytest
from redis.crc import key_slot
from tests.integration.store.scenario import (
    CENT,
    api_key,
    attempt,
    budget,
    policy_for,
    rate_limit,
    team,
)
from tests.support.redis_server import ClusterGroup

from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.store import QuotaStore
from llmquota.store.scripts import script_source

pytestmark = pytest.mark.integration


def global_and_team(global_max: float, team_max: float) -> ResolvedPolicy:
    """A key of team `slots` under a global budget."""
    return policy_for(
        api_key("slotted", team="slots", budget={"maxBudget": 1}, rateLimit={"rpm": 60}),
        team("slots", budget={"maxBudget": team_max}, rateLimit={"rpm": 600}),
        global_budget=budget("everyone", maxBudget=global_max),
    )


def test_each_script_run_stays_in_one_slot_the_global_budgets_first() -> None:
    policy = global_and_team(100, 10)
    call = admission_call(
        policy, RequestEstimate("gpt-4o-mini", CENT, 100), uuid.uuid4().hex, 30_000
    )
    slot_calls = call.slot_calls()
    assert [script_call.tag for script_call in slot_calls] == ["global", "quota/slots"]
    for script_call in slot_calls:
        assert len({key_slot(key.encode()) for key in script_call.keys}) == 1
    assert (
        len({key_slot(slot_calls[0].keys[0].encode()), key_slot(slot_calls[1].keys[0].encode())})
        == 2
    )


async def test_an_admission_across_slots_reserves_and_settles_in_both(
    cluster_store: QuotaStore,
) -> None:
    policy = global_and_team(100, 10)
    admitted = await attempt(cluster_store, policy)
    assert admitted.admitted
    global_scope, team_scope = policy.scopes[0], policy.scopes[1]
    scopes = [(global_scope.tag, global_scope.id), (team_scope.tag, team_scope.id)]
    held = await cluster_store.read_budgets(scopes)
    assert [counter.reserved_nanos for counter in held] == [CENT, CENT]
    assert await cluster_store.settle(admitted.request_id, CENT // 2, 50) == 1
    settled = await cluster_store.read_budgets(scopes)
    assert [(c.spend_nanos, c.reserved_nanos) for c in settled] == [(CENT // 2, 0)] * 2


async def test_a_refusal_in_the_teams_slot_frees_the_global_reservation(
    cluster_store: QuotaStore,
) -> None:
    """Reserved in the global budget's slot first, refused by the team's: what the first
    slot held is freed at once, and the refused request counts nowhere."""
    policy = global_and_team(100, 0.01)
    spent = await attempt(cluster_store, policy)
    assert await cluster_store.settle(spent.request_id, CENT, 10) == 1  # the team's cent
    refused = await attempt(cluster_store, policy)
    assert not refused.admitted
    assert (refused.refusal.limit, refused.refusal.scope_label) == ("max_budget", "team slots")
    global_scope = policy.scopes[0]
    [counter] = await cluster_store.read_budgets([(global_scope.tag, global_scope.id)])
    assert (counter.spend_nanos, counter.reserved_nanos) == (CENT, 0)
    assert await cluster_store.abort(refused.request_id) == 0  # nothing of it is held


async def test_a_refusal_by_the_global_budget_touches_no_team_counter(
    cluster_store: QuotaStore,
) -> None:
    policy = global_and_team(0.01, 10)
    first = await attempt(cluster_store, policy)
    assert await cluster_store.settle(first.request_id, CENT, 10) == 1
    refused = await attempt(cluster_store, policy)
    assert refused.refusal.scope_label == "the global budget"
    team_scope = policy.scopes[1]
    [counter] = await cluster_store.read_budgets([(team_scope.tag, team_scope.id)])
    assert (counter.spend_nanos, counter.reserved_nanos) == (nanos(0.01), 0)


async def test_a_teams_admission_settles_on_the_node_of_its_slot(
    shared_cluster: ClusterGroup,
) -> None:
    """Without a global budget every key of one admission carries the team's hash tag:
    admit.lua and settle.lua run on the node serving that slot, touching only the KEYS
    they are given (the lease record and the leases zset too, not names built in Lua)."""
    shared_cluster.flush()
    # The team's slot (7596) is served by another node than the one that served the
    # lease records' when they had no hash tag (`llmquota:leases`, slot 4734).
    policy = policy_for(
        api_key("slotted", team="far", budget={"maxBudget": 1}, rateLimit={"rpm": 60}),
        team("far", budget={"maxBudget": 10}, rateLimit={"maxParallelRequests": 2}),
    )
    call = admission_call(
        policy, RequestEstimate("gpt-4o-mini", CENT, 100), uuid.uuid4().hex, 30_000
    )
    script_call = call.script_call()
    (slot,) = {key_slot(key.encode()) for key in script_call.keys}
    client = shared_cluster.owner_of(slot).client()
    keys = script_call.keys
    try:
        admitted = client.eval(script_source("admit"), len(keys), *keys, script_call.spec_json, 0)
        assert int(admitted[0]) == 1
        settled = client.eval(script_source("settle"), len(keys), *keys, CENT, 100, 0)
        assert settled == 1
        swept = client.eval(script_source("sweep"), 1, keys[0], 0, 100)
        assert swept == 0
    finally:
        client.close()


async def test_a_request_refused_by_a_pools_slot_is_not_counted_in_the_teams_rpm(
    cluster_store: QuotaStore,
) -> None:
    """A Dynamic pool has a hash tag of its own, admitted after the team's slot: when the
    pool refuses, the team's per-minute count takes the request back, as one script
    would never have counted it."""
    pool = rate_limit("pool", rpm=1, allocation="Dynamic")
    squad = team("squad", rateLimit={"rpm": 2})
    pooled = policy_for(
        api_key("pooled", team="squad", rateLimitRef={"name": "pool"}), squad, rate_limits=[pool]
    )
    plain = policy_for(api_key("plain", team="squad"), squad)
    assert [
        call.tag
        for call in admission_call(pooled, RequestEstimate("m", 1, 1), "r", 1000).slot_calls()
    ] == ["quota/squad", "quota/ratelimit/pool"]

    assert (await attempt(cluster_store, pooled)).admitted
    refused = await attempt(cluster_store, pooled)
    assert "(Dynamic RateLimit pool)" in refused.refusal.scope_label
    assert (await attempt(cluster_store, plain)).admitted  # the team's second request
    assert (await attempt(cluster_store, plain)).refusal.limit == "rpm"
