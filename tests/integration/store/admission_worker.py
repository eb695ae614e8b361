"""A separate process that admits and settles requests like one sidecar replica.

Run by the store's concurrency tests (`python -m tests.integration.store.admission_worker`)
so that several processes, each with its own QuotaStore and connection pool, race for the
same counters. Protocol on stdio: the worker prints `ready` once its policy is loaded,
waits for a line on stdin (the start signal, so all workers start together), then prints
one JSON line with what it saw.

`--hold` admits one request, prints when (no earlier than, in Redis time), then waits
forever without renewing its lease: the test kills it, as a crashed sidecar.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import uuid

from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import Admitted, interpret_admit
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

__all__ = ["main"]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("key_hash")
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--estimate-nanos", type=int, required=True)
    parser.add_argument("--real-min-nanos", type=int, help="default: the estimate")
    parser.add_argument("--real-max-nanos", type=int, help="default: the estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lease-ms", type=int, default=30_000)
    parser.add_argument("--hold", action="store_true")
    return parser.parse_args()


async def _one_request(
    store: QuotaStore,
    policy: ResolvedPolicy,
    arguments: argparse.Namespace,
    real_cost_nanos: int,
) -> dict[str, object]:
    request_id = uuid.uuid4().hex
    call = admission_call(
        policy,
        RequestEstimate("gpt-4o-mini", arguments.estimate_nanos, 100),
        request_id,
        arguments.lease_ms,
    )
    decision = interpret_admit(await store.admit(call), call)
    if not isinstance(decision, Admitted):
        return {"admitted": False, "limit": decision.limit}
    settled = await store.settle(request_id, real_cost_nanos, 100)
    return {"admitted": True, "cost": real_cost_nanos, "settled": settled}


async def _race(store: QuotaStore, policy: ResolvedPolicy, arguments: argparse.Namespace) -> None:
    chooser = random.Random(arguments.seed)
    low = arguments.real_min_nanos or arguments.estimate_nanos
    high = arguments.real_max_nanos or arguments.estimate_nanos
    costs = [chooser.randint(low, high) for _ in range(arguments.requests)]
    gate = asyncio.Semaphore(arguments.concurrency)

    async def limited(cost: int) -> dict[str, object]:
        async with gate:
            return await _one_request(store, policy, arguments, cost)

    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    outcomes = await asyncio.gather(*(limited(cost) for cost in costs))
    print(json.dumps(outcomes), flush=True)


async def _hold(store: QuotaStore, policy: ResolvedPolicy, arguments: argparse.Namespace) -> None:
    call = admission_call(
        policy,
        RequestEstimate("gpt-4o-mini", arguments.estimate_nanos, 100),
        uuid.uuid4().hex,
        arguments.lease_ms,
    )
    not_before_ms = await store.now_ms()
    decision = interpret_admit(await store.admit(call), call)
    print(
        json.dumps({"admitted": isinstance(decision, Admitted), "not_before_ms": not_before_ms}),
        flush=True,
    )
    await asyncio.to_thread(sys.stdin.readline)


async def main() -> None:
    """Load the policy, then race or hold as the arguments say."""
    arguments = _arguments()
    store = QuotaStore.from_url(arguments.url)
    try:
        policy = await store.get_policy(arguments.key_hash)
        if policy is None:
            sys.exit(f"no policy for {arguments.key_hash}")
        await (_hold if arguments.hold else _race)(store, policy, arguments)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
