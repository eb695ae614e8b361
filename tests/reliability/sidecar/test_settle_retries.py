"""Redis SIGKILLed while served requests are about to settle, and restarted on its data
(AOF, `appendfsync always`): every request the sidecar served is charged once the
store is back, because a settle the store missed is retried (#17)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from tests.reliability.harness import wait_until
from tests.reliability.rig import Rig

from llmquota.policy import keyspace
from llmquota.policy.admission import lease_tag
from llmquota.policy.limits import NANOS_PER_USD
from llmquota.store import StoreError

pytestmark = pytest.mark.e2e

KEY = "sk-reliability-settle-0001"
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: settle-bot}}
spec: {{budget: {{maxBudget: 100}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: settle-bot}}
stringData: {{key: {KEY}}}
"""
IN_FLIGHT = 40
UPSTREAM_DELAY_S = 2.0
DOWN_FOR_S = 4.0


def ask(client: openai.OpenAI) -> float | None:
    """One call that the upstream answers after a delay; the cost it says it was charged,
    or None when it was not served."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=16,
            extra_headers={"x-fake-fault": f"delay:{UPSTREAM_DELAY_S}"},
        )
    except openai.APIError:
        return None
    raw.parse()
    return float(raw.headers["x-llmquota-response-cost"])


def settle_metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        name: float(line.split()[-1])
        for line in text.splitlines()
        for name in ("llmquota_settle_retries_total", "llmquota_settles_pending")
        if line.startswith(name + " ")
    }


async def test_requests_served_while_redis_is_down_are_charged_once_it_is_back(rig: Rig) -> None:
    policies = await rig.apply(MANIFESTS)
    await rig.store.redis.config_set("appendfsync", "always")
    sidecar = rig.start_sidecar()
    await rig.wait_for_policies(policies.values())
    client = rig.client(sidecar, KEY, timeout=60)
    policy = policies["settle-bot"]

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(pool, ask, client) for _ in range(IN_FLIGHT)]

        async def all_admitted() -> bool:
            leases = keyspace.leases_key(lease_tag(policy))
            return int(await rig.store.redis.zcard(leases)) == IN_FLIGHT

        await wait_until(all_admitted, timeout_s=UPSTREAM_DELAY_S)
        await asyncio.to_thread(rig.redis.kill)
        killed_at = time.monotonic()
        costs = await asyncio.gather(*calls)
    served = [cost for cost in costs if cost is not None]
    assert len(served) == IN_FLIGHT  # answered while Redis was down
    pending = await asyncio.to_thread(settle_metrics, sidecar.url)
    assert pending["llmquota_settles_pending"] == IN_FLIGHT
    assert pending["llmquota_settle_retries_total"] >= IN_FLIGHT

    await asyncio.sleep(max(DOWN_FOR_S - (time.monotonic() - killed_at), 0))
    await asyncio.to_thread(rig.redis.restart)

    async def all_settled() -> bool:
        try:
            _, reserved = await rig.spend(policy)
        except (OSError, StoreError):
            return False
        return reserved == 0

    await wait_until(all_settled, timeout_s=15)
    spend, _ = await rig.spend(policy)
    assert spend == sum(round(cost * NANOS_PER_USD) for cost in served)
    after = await asyncio.to_thread(settle_metrics, sidecar.url)
    assert after["llmquota_settles_pending"] == 0
