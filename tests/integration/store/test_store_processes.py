"""Several processes, each with its own QuotaStore, racing for one budget; a holder that
dies without settling."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.integration.store.scenario import CENT, api_key, attempt, policy_for
from tests.support.redis_server import RedisEndpoint
from tests.support.waiting import wait_until

from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.store import QuotaStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKERS = 8
REQUESTS = 500
START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 120.0


@asynccontextmanager
async def workers(
    url: str, policy: ResolvedPolicy, arguments: Sequence[Sequence[str]]
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Worker processes, one per argument list, each past its `ready` line; killed after."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.store.admission_worker",
            url,
            policy.key_hash,
            *extra,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for extra in arguments
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def read_line(process: asyncio.subprocess.Process, timeout_s: float) -> str:
    """The process's next stdout line; fails when it exits or is silent too long."""
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    assert line, f"worker exited with {await process.wait()}"
    return line.decode().strip()


async def race(url: str, policy: ResolvedPolicy, *options: str) -> list[dict[str, Any]]:
    """REQUESTS admissions (each settled) spread over WORKERS processes started together."""
    shares = [REQUESTS // WORKERS + (index < REQUESTS % WORKERS) for index in range(WORKERS)]
    arguments = [
        ["--requests", str(share), "--seed", str(index), *options]
        for index, share in enumerate(shares)
    ]
    async with workers(url, policy, arguments) as processes:
        for process in processes:
            assert await read_line(process, START_TIMEOUT_S) == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        outcomes: list[dict[str, Any]] = []
        for process in processes:
            outcomes.extend(json.loads(await read_line(process, RUN_TIMEOUT_S)))
    assert len(outcomes) == REQUESTS
    return outcomes


async def test_500_requests_from_8_processes_admit_exactly_the_budget(
    redis_server: RedisEndpoint, store: QuotaStore
) -> None:
    policy = policy_for(api_key("racer", budget={"maxBudget": 1}))
    await store.put_policy(policy)

    outcomes = await race(redis_server.url, policy, "--estimate-nanos", str(CENT))

    admitted = [outcome for outcome in outcomes if outcome["admitted"]]
    assert len(admitted) == 100
    assert {outcome["settled"] for outcome in admitted} == {1}
    assert {outcome["limit"] for outcome in outcomes if not outcome["admitted"]} == {"max_budget"}
    [counter] = await store.read_budgets([(policy.scopes[0].tag, policy.scopes[0].id)])
    assert (counter.spend_nanos, counter.reserved_nanos) == (nanos(1), 0)
    assert not (await attempt(store, policy, cost_nanos=1)).admitted


async def test_500_requests_from_8_processes_admit_exactly_the_tighter_of_2_windows(
    redis_server: RedisEndpoint, store: QuotaStore
) -> None:
    """Both windows are checked and reserved in one atomic admission: the weekly window's
    half dollar (a calendar window: its boundaries handed in) admits exactly 50 one-cent
    requests, and each counter holds them all."""
    budget = {
        "maxBudget": 1,
        "budgetDuration": "30d",
        "timeZone": "Europe/Berlin",
        "windows": [{"maxBudget": 0.5, "budgetDuration": "weekly"}],
    }
    policy = policy_for(api_key("racer", budget=budget))
    await store.put_policy(policy)
    scope = policy.scopes[0]
    assert scope.budget is not None

    outcomes = await race(redis_server.url, policy, "--estimate-nanos", str(CENT))

    admitted = [outcome for outcome in outcomes if outcome["admitted"]]
    assert len(admitted) == 50
    assert {outcome["limit"] for outcome in outcomes if not outcome["admitted"]} == {"max_budget"}
    [main] = await store.read_budgets([(scope.tag, scope.id)])
    [daily] = await store.read_window_budgets(
        [(scope.tag, scope.id, scope.budget.windows[0].window)]
    )
    assert (main.spend_nanos, main.reserved_nanos) == (nanos(0.5), 0)
    assert (daily.spend_nanos, daily.reserved_nanos) == (nanos(0.5), 0)


async def test_real_costs_below_the_estimate_overshoot_by_less_than_one_request(
    redis_server: RedisEndpoint, store: QuotaStore
) -> None:
    """The estimate is the request's worst case (max_tokens); real costs come in lower."""
    policy = policy_for(api_key("racer", budget={"maxBudget": 1}))
    await store.put_policy(policy)
    scope = policy.scopes[0]

    outcomes = await race(
        redis_server.url,
        policy,
        "--estimate-nanos", str(CENT),
        "--real-min-nanos", str(CENT * 4 // 10),
        "--real-max-nanos", str(CENT),
    )  # fmt: skip

    admitted = [outcome for outcome in outcomes if outcome["admitted"]]
    assert len(admitted) >= 100  # every estimate fits at least 100 times
    [counter] = await store.read_budgets([(scope.tag, scope.id)])
    assert counter.reserved_nanos == 0
    assert counter.spend_nanos == sum(outcome["cost"] for outcome in admitted)
    assert counter.spend_nanos < nanos(1) + CENT

    # Whatever room the race left is handed out until the budget is used up, and then
    # nothing more is admitted.
    while (final := await attempt(store, policy)).admitted:
        assert await store.settle(final.request_id, CENT, 100) == 1
    [counter] = await store.read_budgets([(scope.tag, scope.id)])
    assert nanos(1) <= counter.spend_nanos < nanos(1) + CENT
    assert final.refusal.limit == "max_budget"


async def test_a_killed_holder_frees_its_parallel_slot_after_the_lease(
    redis_server: RedisEndpoint, store: QuotaStore
) -> None:
    lease_ms = 500
    policy = policy_for(api_key("crashy", rateLimit={"maxParallelRequests": 1}))
    await store.put_policy(policy)
    hold = ["--hold", "--estimate-nanos", str(CENT), "--lease-ms", str(lease_ms)]
    async with workers(redis_server.url, policy, [hold]) as [holder]:
        held = json.loads(await read_line(holder, START_TIMEOUT_S))
        assert held["admitted"]
        holder.kill()  # SIGKILL: it never settles, aborts or renews
        await holder.wait()

    async def slot_free() -> bool:
        outcome = await attempt(store, policy)
        if outcome.admitted:
            return True
        assert outcome.refusal.limit == "max_parallel_requests"
        return False

    await wait_until(slot_free, timeout_s=10, poll_s=0.005)
    assert await store.now_ms() >= held["not_before_ms"] + lease_ms
