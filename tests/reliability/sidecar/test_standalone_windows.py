"""Standalone windows are cut from when a manifest was first loaded, and every replica
agrees: two real sidecar processes on one redis-server, the second started later, cut a
30d budget created now at 30 days from now (not at a multiple of 30 days since 1970)."""

from __future__ import annotations

import asyncio

import openai
import pytest
from tests.e2e.sidecar.processes import team_and_key
from tests.reliability.harness import wait_until
from tests.reliability.rig import Rig

from llmquota.policy import keyspace
from llmquota.policy.limits import ResolvedPolicy

pytestmark = pytest.mark.e2e

KEY = "sk-reliability-windows-0001"
THIRTY_DAYS_S = 30 * 86_400
MANIFESTS = team_and_key(
    "windows",
    "windows-bot",
    KEY,
    team_spec="{budget: {maxBudget: 0.000000001, budgetDuration: 30d}}",
)


def refused_retry_after(client: openai.OpenAI) -> int:
    """Spend the tiny budget; the Retry-After of the 402 that follows, in seconds."""
    for _ in range(5):
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        except openai.APIStatusError as refused:
            status, retry_after = refused.status_code, refused.response.headers["retry-after"]
            break
    else:
        raise AssertionError("never refused")
    assert status == 402
    return int(retry_after)


async def stored_policy(rig: Rig, key_hash: str) -> ResolvedPolicy:
    encoded = await rig.store.redis.get(keyspace.policy_key(key_hash))
    assert encoded is not None
    return ResolvedPolicy.model_validate_json(encoded)


def team_anchor(policy: ResolvedPolicy) -> int:
    (team,) = [scope for scope in policy.scopes if scope.kind == "team"]
    assert team.budget is not None
    return team.budget.anchor_ms


async def test_two_sidecars_cut_the_window_from_the_first_load(rig: Rig) -> None:
    policies = await rig.apply(MANIFESTS)
    (key_hash,) = [policy.key_hash for policy in policies.values()]
    before_ms = await rig.store.now_ms()
    first = rig.start_sidecar()
    await rig.wait_for_policies(policies.values())
    after_ms = await rig.store.now_ms()
    anchor_ms = team_anchor(await stored_policy(rig, key_hash))
    assert before_ms <= anchor_ms <= after_ms
    recorded = await rig.store.redis.get(keyspace.created_key("Team default/windows"))
    assert recorded is not None
    assert int(recorded) == anchor_ms

    async def a_second_later() -> bool:
        return await rig.store.now_ms() > anchor_ms + 1_500

    await wait_until(a_second_later, timeout_s=5)
    second = rig.start_sidecar()
    assert team_anchor(await stored_policy(rig, key_hash)) == anchor_ms

    retry_second = await asyncio.to_thread(refused_retry_after, rig.client(second, KEY))
    retry_first = await asyncio.to_thread(refused_retry_after, rig.client(first, KEY))
    for retry_after in (retry_first, retry_second):
        assert THIRTY_DAYS_S - 120 <= retry_after <= THIRTY_DAYS_S
