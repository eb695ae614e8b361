"""Redis loss: notice it within a second and put back what the operator knows.

Redis is the enforcement state, Kubernetes the source of truth. When policies the
operator wrote are missing (Redis restarted empty, failed over to a stale replica, was
flushed), this loop re-seeds the current windows' budget counters from the statuses it
last wrote and then re-puts every policy, in that order, so no sidecar admits against a
zeroed counter. What can be lost is the spend settled after the last status sync: at
most one --status-interval of spend (docs/operator.md).

The same loop calls `store.sweep()` to free the leases of sidecars that died mid-request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from llmquota.operator.state import OperatorState
from llmquota.store import StoreError

__all__ = ["recover_once", "watch_store"]

logger = logging.getLogger(__name__)


async def recover_once(state: OperatorState) -> int:
    """Re-seed and re-put if any written policy, or any counter with spend, is gone (a
    whole Redis, or one Cluster node, lost its data); how many policies were re-put."""
    expected = {
        record.key_hash: record.policy
        for record in list(state.keys.values())
        if record.policy is not None
    }
    if not expected:
        return 0
    gone = await state.store.missing_policies(expected)
    missing = [policy for key_hash, policy in expected.items() if key_hash in gone]
    now_ms = await state.store.now_ms()
    current = {
        scope: seed
        for scope, seed in list(state.seeds.items())
        # A window that is over is left alone: the new one rightly starts at zero.
        if seed.window.start_ms <= now_ms
        and not 0 <= seed.window.end_ms <= now_ms
        and (seed.spend_nanos or seed.model_spend_nanos)
    }
    # One counter with spend per hash tag tells whether that tag's slot lost its data.
    probes = {tag: (tag, scope_id) for tag, scope_id in current}
    lost = await state.store.missing_budgets(probes.values())
    if not missing and not lost:
        return 0
    logger.warning(
        "Redis lost %d of %d policies and the counters of %d hash tags: re-seeding counters "
        "and re-putting policies",
        len(missing),
        len(expected),
        len(lost),
    )
    seeded = 0
    for (tag, scope_id), seed in current.items():
        seeded += await state.store.seed_budget(
            tag,
            scope_id,
            (seed.window.start_ms, seed.window.end_ms),
            seed.spend_nanos,
            seed.model_spend_nanos,
        )
    restored = 0
    for policy in missing:
        # Under the key's lock, and only if still current: a key rotated meanwhile must
        # not get its old hash back.
        async with state.lock(policy.namespace, policy.key_name):
            record = state.keys.get((policy.namespace, policy.key_name))
            if record is not None and record.key_hash == policy.key_hash:
                await state.store.put_policy(policy)
                restored += 1
    logger.warning("restored %d policies and %d budget counters", restored, seeded)
    return restored


async def watch_store(state: OperatorState) -> None:
    """Forever: check for a Redis loss every recovery interval; sweep every status interval."""
    last_sweep = 0.0
    while True:
        try:
            await recover_once(state)
            if time.monotonic() - last_sweep >= state.config.status_interval:
                await state.store.sweep()
                last_sweep = time.monotonic()
        except (StoreError, OSError) as error:
            logger.warning("Redis unreachable, will retry: %s", error)
        await asyncio.sleep(state.config.recovery_interval)
