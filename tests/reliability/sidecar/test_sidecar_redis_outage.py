"""Redis SIGKILLed under a running sidecar, then restarted on its data.

While it is down the sidecar answers 503 service_unavailable (or admits uncounted with
--fail-open, or where every limit of the key says failurePolicy: Open); when it is back
the same sidecar process serves again by itself, and the spend settled before the crash
is still there.
"""

from __future__ import annotations

import asyncio
import urllib.request

import openai
import pytest
from tests.reliability.harness import wait_until
from tests.reliability.rig import Rig

pytestmark = pytest.mark.e2e

KEY = "sk-reliability-outage-0001"
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {{name: outage}}
spec: {{budget: {{maxBudget: 100, budgetDuration: 30d}}}}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: outage-bot}}
spec: {{team: outage}}
---
apiVersion: v1
kind: Secret
metadata: {{name: outage-bot}}
stringData: {{key: {KEY}}}
"""


def ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


@pytest.mark.parametrize(
    "fail_open",
    [
        pytest.param(False, id="fail-closed"),
        pytest.param(True, id="fail-open"),
    ],
)
async def test_sidecar_rides_out_a_redis_crash(rig: Rig, fail_open: bool) -> None:
    policies = await rig.apply(MANIFESTS)
    await rig.store.redis.config_set("appendfsync", "always")
    sidecar = rig.start_sidecar(*(["--fail-open"] if fail_open else []))
    await rig.wait_for_policies(policies.values())
    client = rig.client(sidecar, KEY)
    for _ in range(3):
        await asyncio.to_thread(ask, client)
    spend_before, _ = await rig.spend(policies["outage-bot"], "team")
    assert spend_before > 0

    await asyncio.to_thread(rig.redis.kill)
    if fail_open:
        await asyncio.to_thread(ask, client)
        metrics = await asyncio.to_thread(scrape, sidecar.url)
        assert [
            line
            for line in metrics.splitlines()
            if line.startswith("llmquota_requests_total{") and 'outcome="fail_open"' in line
        ] == [
            'llmquota_requests_total{key="outage-bot",model="gpt-4o-mini",namespace="default",'
            'outcome="fail_open",team="outage",workload=""} 1.0'
        ]
    else:
        with pytest.raises(openai.APIStatusError) as refused:
            await asyncio.to_thread(ask, client)
        assert refused.value.status_code == 503
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["type"] == "service_unavailable"

    await asyncio.to_thread(rig.redis.restart)
    # The first request after the restart is served: no stale connection is handed out.
    await asyncio.to_thread(ask, client)

    async def charged_again() -> bool:
        spend_after, _ = await rig.spend(policies["outage-bot"], "team")
        return spend_after > spend_before

    await wait_until(charged_again, timeout_s=5)
    assert sidecar.popen.poll() is None


POLICY_KEYS = {
    "open-budget": "sk-reliability-open-budget",
    "closed-budget": "sk-reliability-closed-budget",
    "rate-only": "sk-reliability-rate-only",
    "closed-rate": "sk-reliability-closed-rate",
}
POLICY_MANIFESTS = "".join(
    f"""
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: {name}}}
spec: {spec}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData: {{key: {POLICY_KEYS[name]}}}
"""
    for name, spec in (
        # Money with failurePolicy Open and a rate limit (Open by default): let through.
        ("open-budget", "{budget: {maxBudget: 100, failurePolicy: Open}, rateLimit: {rpm: 1000}}"),
        # The default for money is Closed, whatever the rate limit says.
        ("closed-budget", "{budget: {maxBudget: 100}, rateLimit: {rpm: 1000}}"),
        # No budget (spend only counted) and a rate limit: nothing Closed applies.
        ("rate-only", "{rateLimit: {rpm: 1000}}"),
        # A rate limit that asks to fail closed keeps an Open budget's key out.
        (
            "closed-rate",
            "{budget: {maxBudget: 100, failurePolicy: Open}, "
            "rateLimit: {rpm: 1000, failurePolicy: Closed}}",
        ),
    )
)


async def test_during_an_outage_each_key_follows_its_limits_failure_policy(rig: Rig) -> None:
    policies = await rig.apply(POLICY_MANIFESTS)
    sidecar = rig.start_sidecar()
    await rig.wait_for_policies(policies.values())
    clients = {name: rig.client(sidecar, key) for name, key in POLICY_KEYS.items()}
    for client in clients.values():  # each policy is in the sidecar's cache now
        await asyncio.to_thread(ask, client)

    await asyncio.to_thread(rig.redis.kill)
    outcomes = {}
    for name, client in clients.items():
        try:
            await asyncio.to_thread(ask, client)
        except openai.APIStatusError as refused:
            outcomes[name] = refused.status_code
        else:
            outcomes[name] = 200
    assert outcomes == {
        "open-budget": 200,
        "closed-budget": 503,
        "rate-only": 200,
        "closed-rate": 503,
    }
    await asyncio.to_thread(rig.redis.restart)
