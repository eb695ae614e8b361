"""Why `redis+cluster://` is refused today, on a real three-node Redis Cluster: a team's
counters share one hash slot, but one admission also names the global budget's, in
another, and a Cluster runs no script across slots."""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.crc import key_slot
from tests.integration.store.scenario import CENT, api_key, budget, policy_for, team
from tests.support.redis_server import ClusterGroup

from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.store.scripts import script_source

pytestmark = pytest.mark.integration


def admission_keys() -> list[str]:
    """The keys of one admission for a key with a team and the global budget."""
    policy = policy_for(
        api_key("slotted", team="slots", budget={"maxBudget": 1}, rateLimit={"rpm": 60}),
        team("slots", budget={"maxBudget": 10}, rateLimit={"rpm": 600}),
        global_budget=budget("everyone", maxBudget=100),
    )
    call = admission_call(
        policy, RequestEstimate("gpt-4o-mini", CENT, 100), uuid.uuid4().hex, 30_000
    )
    return list(call.script_call().keys)


async def test_one_admission_spans_slots_and_the_cluster_refuses_it(
    cluster_group: ClusterGroup,
) -> None:
    keys = admission_keys()
    slots = {key: key_slot(key.encode()) for key in keys}
    team_slots = {slot for key, slot in slots.items() if "slots" in key}
    assert len(team_slots) == 1  # the team's hash tag holds its counters together
    assert len(set(slots.values())) > 1  # ... but not the global budget's

    client = cluster_group.owner_of(slots[keys[0]]).client()
    try:
        with pytest.raises(redis.ResponseError, match="don't hash to the same slot"):
            client.eval(script_source("admit"), len(keys), *keys, "{}", 0)
    finally:
        client.close()


async def test_a_teams_admission_settles_on_the_node_of_its_slot(
    cluster_group: ClusterGroup,
) -> None:
    """Without a global budget every key of one admission carries the team's hash tag:
    admit.lua and settle.lua run on the node serving that slot, touching only the KEYS
    they are given (the lease record and the leases zset too, not names built in Lua)."""
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
    client = cluster_group.owner_of(slot).client()
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
