"""A sidecar SIGKILLed with 50 requests in flight: nobody settles or aborts them, so
their reservations and parallel slots must free themselves when their leases run out,
and a sidecar started in its place serves at once."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest
from tests.reliability.harness import wait_until
from tests.reliability.rig import Rig

from llmquota.policy.limits import ResolvedPolicy

pytestmark = pytest.mark.e2e

KEY = "sk-reliability-crash-0001"
IN_FLIGHT = 50
LEASE_S = 2.0
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {{name: crash}}
spec: {{budget: {{maxBudget: 100}}}}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: crash-bot}}
spec: {{team: crash, rateLimit: {{maxParallelRequests: {IN_FLIGHT}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: crash-bot}}
stringData: {{key: {KEY}}}
"""
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def post(session: aiohttp.ClientSession, url: str, fault: str = "none") -> int:
    async with session.post(
        f"{url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {KEY}", "x-fake-fault": fault},
    ) as response:
        await response.read()
        return response.status


async def test_a_killed_sidecars_slots_and_reservations_free_themselves(rig: Rig) -> None:
    policy = (await rig.apply(MANIFESTS))["crash-bot"]
    doomed = rig.start_sidecar("--lease-seconds", str(LEASE_S))
    await rig.wait_for_policies([policy])

    async with aiohttp.ClientSession() as session:
        assert await post(session, doomed.url) == 200
        await wait_until(lambda: _held(rig, policy, 0), timeout_s=5)
        one_request, _ = await rig.spend(policy)
        assert one_request > 0
        hanging = [
            asyncio.create_task(post(session, doomed.url, "delay:30")) for _ in range(IN_FLIGHT)
        ]
        await wait_until(lambda: _held(rig, policy, IN_FLIGHT), timeout_s=20)
        assert (await rig.spend(policy))[1] > 0
        killed_at = time.monotonic()
        doomed.popen.kill()
        doomed.popen.wait()
        for task in hanging:
            with contextlib.suppress(aiohttp.ClientError):
                await task

        successor = rig.start_sidecar("--lease-seconds", str(LEASE_S))
        # Every slot is still held by a dead lease; the first admission after they
        # expire frees them (admit sweeps expired leases before it checks).
        statuses = []

        async def admitted() -> bool:
            statuses.append(await post(session, successor.url))
            return statuses[-1] == 200

        # The leases end LEASE_S after the kill; on a busy machine the successor may take
        # longer than that to start, so its first admission is due by whichever is later.
        due_at = max(killed_at + LEASE_S + 3, time.monotonic() + 2)
        await wait_until(
            admitted, due_at - time.monotonic(), poll_s=0.1, what="an admission after the leases"
        )

        # The whole capacity is back: 50 at once are admitted again.
        again = await asyncio.gather(*(post(session, successor.url) for _ in range(IN_FLIGHT)))
        assert again == [200] * IN_FLIGHT

    # The sidecar answers, then settles: wait for the last settlements.
    await wait_until(lambda: _held(rig, policy, 0), timeout_s=5)
    spend, reserved = await rig.spend(policy)
    assert reserved == 0
    # Only the served requests are charged: the killed ones cost nothing.
    assert spend == (1 + statuses.count(200) + IN_FLIGHT) * one_request


async def _held(rig: Rig, policy: ResolvedPolicy, count: int) -> bool:
    return await rig.in_flight(policy) == count
