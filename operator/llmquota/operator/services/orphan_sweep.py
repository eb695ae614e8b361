"""Policies that no ApiKey owns: found and withdrawn at start and every --orphan-interval.

ApiKeys carry no finalizer (so removing the operator first never leaves objects, CRDs
or namespaces stuck Terminating). A deletion seen by the watch withdraws the policy at
once; one that happened while the operator was down, or whose finalizer was stripped by
hand, is caught here: the first sweep runs as the operator starts, so such a key is
refused again within seconds of the operator's return.

A sweep reads the policies in Redis first and lists the ApiKeys second: a policy is
written only after its ApiKey exists, so a key too new for the listing cannot have a
policy in the earlier read. Policies of namespaces the operator does not watch are never
touched (another operator may own them). Which policies are orphaned:
`rules.orphans.orphaned_policies`.
"""

from __future__ import annotations

import asyncio
import logging

from kubernetes_asyncio.client.exceptions import ApiException

from llmquota.operator.rules.orphans import orphaned_policies
from llmquota.operator.state import OperatorState
from llmquota.store import StoreError

__all__ = ["keep_policies_owned", "sweep_orphans"]

logger = logging.getLogger(__name__)


async def sweep_orphans(state: OperatorState) -> int:
    """Withdraw every policy no ApiKey owns; how many were withdrawn."""
    owners = await state.store.policy_owners(await state.store.policy_hashes())
    live = await state.kubernetes.list_apikeys(state.config.namespaces)
    written = {ref: record.key_hash for ref, record in list(state.keys.items())}
    withdrawn = 0
    for key_hash in orphaned_policies(owners, live, written, state.config.namespaces):
        namespace, name = owners[key_hash]
        # Under the key's lock: a rotation in progress writes the new hash before it
        # records it, and that new policy must not be taken for an orphan.
        async with state.lock(namespace, name):
            record = state.keys.get((namespace, name))
            if record is not None and record.key_hash == key_hash:
                continue
            await state.store.delete_policy(key_hash)
        withdrawn += 1
        logger.warning("withdrew the policy of ApiKey %s/%s: no ApiKey owns it", namespace, name)
    return withdrawn


async def keep_policies_owned(state: OperatorState) -> None:
    """Forever: a sweep now, then one every --orphan-interval (failures are retried)."""
    while True:
        try:
            await sweep_orphans(state)
        except (StoreError, ApiException, OSError) as error:
            logger.warning("orphaned-policy sweep failed, will retry: %s", error)
            await asyncio.sleep(min(state.config.orphan_interval, state.config.status_interval))
            continue
        await asyncio.sleep(state.config.orphan_interval)
