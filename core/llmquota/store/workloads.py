"""Workload policies and the workloads seen, in Redis: the keyless side of the store.

The operator writes one `WorkloadPolicy` per Team with a workloadSelector, in a hash per
namespace; a sidecar reads its own namespace's (one HGETALL, cached until a change is
published). A workload's first keyless request is noted in its team's index, which is how
the operator finds the counters behind `status.workloadSpend` without watching Pods.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from llmquota.policy import keyspace
from llmquota.policy.identity import NamespacePolicies, WorkloadPolicy
from llmquota.policy.limits import first_problem
from llmquota.store.errors import store_call
from llmquota.store.quota_store import QuotaStore

__all__ = [
    "delete_workload_policy",
    "note_workload",
    "put_workload_policy",
    "read_workload_policies",
    "replace_workload_policies",
    "workload_policies",
    "workload_policy_teams",
    "workloads_of",
]


@store_call
async def put_workload_policy(store: QuotaStore, policy: WorkloadPolicy) -> bool:
    """Write a Team's workload policy and tell every sidecar; False when it was so already."""
    name = keyspace.workload_policies_key(policy.namespace)
    encoded = policy.model_dump_json(by_alias=True)
    previous = await store.redis.hget(name, policy.team)
    if previous == encoded.encode():
        return False
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(name, policy.team, encoded)
        pipe.publish(keyspace.POLICY_CHANNEL, keyspace.workload_policies_change(policy.namespace))
        await pipe.execute()
    return True


@store_call
async def delete_workload_policy(store: QuotaStore, namespace: str, team: str) -> None:
    """Withdraw a Team's workload policy: its workloads' keyless requests get 401."""
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keyspace.workload_policies_key(namespace), team)
        pipe.publish(keyspace.POLICY_CHANNEL, keyspace.workload_policies_change(namespace))
        await pipe.execute()


@store_call
async def replace_workload_policies(
    store: QuotaStore, policies: Sequence[WorkloadPolicy], previous: Sequence[WorkloadPolicy]
) -> int:
    """Write `policies` and withdraw those of `previous` no longer among them (a folder
    loaded again, standalone); how many changed."""
    changed = 0
    for policy in policies:
        changed += await put_workload_policy(store, policy)
    kept = {(policy.namespace, policy.team) for policy in policies}
    for gone in previous:
        if (gone.namespace, gone.team) not in kept:
            await delete_workload_policy(store, gone.namespace, gone.team)
            changed += 1
    return changed


@store_call
async def read_workload_policies(store: QuotaStore, namespace: str) -> NamespacePolicies:
    """The workload policies of one namespace, and the Teams whose policy this version
    cannot read (written by a newer one, or damaged), with the first problem."""
    raw = await store.redis.hgetall(keyspace.workload_policies_key(namespace))
    policies: list[WorkloadPolicy] = []
    unreadable: dict[str, str] = {}
    for team, encoded in raw.items():
        try:
            policies.append(WorkloadPolicy.model_validate_json(encoded))
        except ValidationError as error:
            unreadable[_text(team)] = first_problem(error)
    return NamespacePolicies(policies, unreadable)


async def workload_policies(store: QuotaStore, namespace: str) -> list[WorkloadPolicy]:
    """The workload policies of one namespace this version can read (one it cannot is
    rewritten when its Team is reconciled)."""
    return list((await read_workload_policies(store, namespace)).policies)


@store_call
async def workload_policy_teams(store: QuotaStore, namespace: str) -> set[str]:
    """The Teams of a namespace that have a workload policy written."""
    fields = await store.redis.hkeys(keyspace.workload_policies_key(namespace))
    return {_text(field) for field in fields}


@store_call
async def note_workload(
    store: QuotaStore, tag: str, team_scope_id: str, workload_scope_id: str
) -> None:
    """Record that a workload charges a team (idempotent: one SADD)."""
    await store.redis.sadd(keyspace.workload_index_key(tag, team_scope_id), workload_scope_id)


@store_call
async def workloads_of(store: QuotaStore, tag: str, team_scope_id: str) -> set[str]:
    """The workload scope ids that have charged a team."""
    members = await store.redis.smembers(keyspace.workload_index_key(tag, team_scope_id))
    return {_text(member) for member in members}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
