"""The operator's recovery on a real three-primary Redis Cluster when ONE node comes
back empty: the counters of the hash tags that node served are re-seeded from what the
statuses last showed, the others are left as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest
from redis.crc import key_slot
from tests.integration.store.scenario import CENT, api_key, attempt, policy_for, team
from tests.support.redis_server import ClusterGroup
from tests.unit.operator.test_status_sync import indexes_of

from llmquota.durations import NEVER, Window
from llmquota.operator.config import OperatorConfig
from llmquota.operator.rules.status_view import Seed
from llmquota.operator.services.recovery import recover_once
from llmquota.operator.state import KeyRecord, OperatorState
from llmquota.policy import keyspace
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

if TYPE_CHECKING:
    from llmquota.operator.storage.kubernetes import KubernetesStorage

pytestmark = pytest.mark.integration

# Team `far`'s slot (7596) and team `slots`' (717) lie on different nodes, and the policy
# index (`llmquota:policies`, 12450) on the third: flushing `far`'s node loses its
# counters while every policy the index lists may still be there.
LOST, KEPT = "far", "slots"


async def spend_and_seed(store: QuotaStore, state: OperatorState, policy: ResolvedPolicy) -> None:
    """Settle three cents on the key's team, and record them as the status sync would."""
    for _ in range(3):
        spent = await attempt(store, policy)
        assert await store.settle(spent.request_id, CENT, 10) == 1
    team_scope = policy.scopes[0]
    state.seeds[(team_scope.tag, team_scope.id)] = Seed(Window(0, NEVER), 3 * CENT)
    state.keys[(policy.namespace, policy.key_name)] = KeyRecord(policy.key_hash, policy)
    await store.put_policy(policy)


async def test_one_flushed_node_gets_its_counters_back(
    shared_cluster: ClusterGroup, cluster_store: QuotaStore
) -> None:
    state = OperatorState(
        config=OperatorConfig(redis_url="redis://unused"),
        store=cluster_store,
        kubernetes=cast("KubernetesStorage", None),
        indexes=indexes_of([]),
    )
    policies = {
        name: policy_for(api_key(f"bot-{name}", team=name), team(name, budget={"maxBudget": 1}))
        for name in (LOST, KEPT)
    }
    for policy in policies.values():
        await spend_and_seed(cluster_store, state, policy)
    assert await recover_once(state) == 0  # nothing lost yet

    lost_scope, kept_scope = (policies[name].scopes[0] for name in (LOST, KEPT))
    lost_node = shared_cluster.owner_of(key_slot(keyspace.budget_key(lost_scope.tag, "").encode()))
    index_node = shared_cluster.owner_of(key_slot(keyspace.POLICY_INDEX.encode()))
    assert lost_node is not index_node
    client = lost_node.client()
    try:
        client.flushall()
    finally:
        client.close()
    # The kept team spends on meanwhile: recovery must not overwrite that either.
    extra = await attempt(cluster_store, policies[KEPT])
    assert await cluster_store.settle(extra.request_id, CENT, 10) == 1

    await recover_once(state)

    lost, kept = await cluster_store.read_budgets(
        [(lost_scope.tag, lost_scope.id), (kept_scope.tag, kept_scope.id)]
    )
    assert lost.spend_nanos == 3 * CENT
    assert kept.spend_nanos == 4 * CENT
    for policy in policies.values():
        assert await cluster_store.get_policy(policy.key_hash) == policy
    assert await cluster_store.policy_hashes() == {p.key_hash for p in policies.values()}
    assert await recover_once(state) == 0
