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
    """Re-seed and re-put if any written policy is gone; how many policies were re-put."""
    expected = {
        record.key_hash: record.policy
        for record in list(state.keys.values())
        if record.policy is not None
    }
    if not expected:
        return 0
    present = await state.store.policy_hashes()
    missing = [policy for key_hash, policy in expected.items() if key_hash not in present]
    if not missing:
        return 0
    logger.warning(
        "Redis lost %d of %d policies: re-seeding counters and re-putting policies",
        len(missing),
        len(expected),
    )
    now_ms = await state.store.now_ms()
    seeded = 0
    for (tag, scope_id), seed in list(state.seeds.items()):
        if seed.window.start_ms > now_ms or (0 <= seed.window.end_ms <= now_ms):
            continue  # that window is over: the new one rightly starts at zero
        if seed.spend_nanos or seed.model_spend_nanos:
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
