"""Standalone mode survives a store that lost its data: FLUSHALL, or redis-server SIGKILLed
and restarted empty (a new pod without its volume).

The sidecar notices within a second (its generation marker is gone), restores the spend
from its snapshot and re-writes its policies: keys are not refused with 401 beyond that,
and a budget of 50 requests serves 50 in all, not 50 more after the wipe.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
import pytest
from tests.e2e.sidecar.processes import Process, free_port, start, team_and_key
from tests.reliability.harness import wait_until
from tests.reliability.rig import UPSTREAM_KEY, Rig

from llmquota.policy import keyspace
from llmquota.policy.limits import NANOS_PER_USD, ResolvedPolicy
from llmquota.sidecar.spend_snapshot import default_state_file

pytestmark = pytest.mark.e2e

KEY, IDLE_KEY, PROBE_KEY = "sk-wipe-bot-0001", "sk-wipe-idle-0001", "sk-wipe-probe-0001"
BUDGET_REQUESTS, BEFORE_WIPE = 50, 30
DETECTION_S = 1.0
# On a busy test machine a check may run late; the sidecar checks every 0.25 s.
DETECTION_SLACK_S = 1.0


def ask(client: openai.OpenAI) -> None:
    """One request, the same every time (the fake upstream's usage is fixed)."""
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )


def manifests(cost_usd: float) -> str:
    """A team whose budget holds BUDGET_REQUESTS requests, a key that spends it, a key
    that stays idle until the wipe, and an unlimited probe key."""
    budget = (
        f"{{budget: {{maxBudget: {cost_usd * (BUDGET_REQUESTS - 0.5)!r}, budgetDuration: 30d}}}}"
    )
    return "---\n".join(
        [
            team_and_key("wipe", "wipe-bot", KEY, team_spec=budget),
            team_and_key("wipe-idle", "wipe-idle", IDLE_KEY),
            team_and_key("wipe-probe", "wipe-probe", PROBE_KEY),
        ]
    )


def served_until_refused(client: openai.OpenAI, wiped_at: float) -> tuple[int, list[float]]:
    """Requests served until a 402, and when (seconds after the wipe) any got 401."""
    served, unauthorized = 0, []
    for _ in range(BUDGET_REQUESTS * 2):
        try:
            ask(client)
        except openai.AuthenticationError:
            unauthorized.append(time.monotonic() - wiped_at)
            continue
        except openai.APIStatusError as refused:
            status = refused.status_code
            break
        served += 1
    else:
        raise AssertionError("never refused")
    assert status == 402
    return served, unauthorized


def snapshot_spend(state_file: Path, scope_id: str) -> int:
    """The spend of one scope in the sidecar's state file (0 when absent)."""
    try:
        snapshot = json.loads(state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(c["spend_nanos"] for c in snapshot["counters"] if c["scope_id"] == scope_id)


async def spend_then_wipe(
    rig: Rig, wipe: Callable[[], Awaitable[None]]
) -> tuple[Process, dict[str, ResolvedPolicy], float]:
    """Spend BEFORE_WIPE requests, wait for the snapshot to hold them, wipe; the sidecar,
    the policies and when the wipe was done (monotonic)."""
    probe = await rig.apply(team_and_key("wipe-probe", "wipe-probe", PROBE_KEY))
    sidecar = rig.start_sidecar()
    await asyncio.to_thread(ask, rig.client(sidecar, PROBE_KEY))
    cost_nanos, _ = await rig.spend(probe["wipe-probe"], "key")
    cost = cost_nanos / NANOS_PER_USD
    policies = await rig.apply(manifests(cost))
    client = rig.client(sidecar, KEY)
    for _ in range(BEFORE_WIPE):
        await asyncio.to_thread(ask, client)
    spent, _ = await rig.spend(policies["wipe-bot"], "team")
    assert spent == BEFORE_WIPE * cost_nanos
    state_file = default_state_file(rig.manifests)

    async def snapshot_holds_it() -> bool:
        return snapshot_spend(state_file, "team/default/wipe") == spent

    await wait_until(snapshot_holds_it, timeout_s=5)
    await wipe()
    return sidecar, policies, time.monotonic()


async def assert_recovered(
    rig: Rig, sidecar: Process, policies: dict[str, ResolvedPolicy], wiped_at: float
) -> None:
    names = [keyspace.policy_key(policy.key_hash) for policy in policies.values()]

    async def policies_back() -> bool:
        return bool(await rig.store.redis.exists(*names) == len(names))

    await wait_until(policies_back, timeout_s=10, poll_s=0.02)
    assert time.monotonic() - wiped_at < DETECTION_S + DETECTION_SLACK_S
    await asyncio.to_thread(ask, rig.client(sidecar, IDLE_KEY))  # never seen before: served

    served, unauthorized = await asyncio.to_thread(
        served_until_refused, rig.client(sidecar, KEY), wiped_at
    )
    assert [late for late in unauthorized if late > DETECTION_S + DETECTION_SLACK_S] == []
    # The snapshot held every request of before the wipe: none is served twice.
    assert BEFORE_WIPE + served == BUDGET_REQUESTS
    assert "store wiped or replaced" in sidecar.log_text()
    assert sidecar.popen.poll() is None


async def test_flushall_is_noticed_and_the_spend_restored(rig: Rig) -> None:
    async def flushall() -> None:
        await rig.store.redis.flushall()

    sidecar, policies, wiped_at = await spend_then_wipe(rig, flushall)
    await assert_recovered(rig, sidecar, policies, wiped_at)


async def test_redis_killed_and_back_empty_is_restored(rig: Rig) -> None:
    async def kill_and_restart_empty() -> None:
        await asyncio.to_thread(rig.redis.kill)
        await asyncio.to_thread(rig.redis.restart, empty=True)

    sidecar, policies, wiped_at = await spend_then_wipe(rig, kill_and_restart_empty)
    await assert_recovered(rig, sidecar, policies, wiped_at)


def start_embedded(directory: Path, upstream: Process, number: int) -> Process:
    """A sidecar on an embedded redis-server of its own (no --redis): a new, empty store
    every time it starts."""
    key_file = directory / "upstream-key"
    key_file.write_text(UPSTREAM_KEY)
    port = free_port()
    return start(
        ["sidecar", "--listen", f"127.0.0.1:{port}", "--upstream", upstream.url,
         "--upstream-key-file", str(key_file), "--manifests", str(directory / "manifests")],
        directory / f"sidecar-{number}.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )  # fmt: skip


async def test_a_restarted_sidecar_gets_its_spend_back_from_the_state_file(
    tmp_path: Path, upstream: Process
) -> None:
    """Without --redis every start is on an empty store: the state file carries the spend."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    state_file = default_state_file(folder)
    (folder / "test.yaml").write_text(team_and_key("wipe-probe", "wipe-probe", PROBE_KEY))
    first = start_embedded(tmp_path, upstream, 1)
    try:
        with openai.OpenAI(base_url=f"{first.url}/v1", api_key=PROBE_KEY, max_retries=0) as probe:
            await asyncio.to_thread(ask, probe)

        async def probe_spent() -> bool:
            return snapshot_spend(state_file, "key/default/wipe-probe") > 0

        await wait_until(probe_spent, timeout_s=5)
        cost_nanos = snapshot_spend(state_file, "key/default/wipe-probe")
        (folder / "test.yaml").write_text(manifests(cost_nanos / NANOS_PER_USD))
        with openai.OpenAI(base_url=f"{first.url}/v1", api_key=KEY, max_retries=0) as client:

            async def key_known() -> bool:
                try:
                    await asyncio.to_thread(ask, client)
                except openai.AuthenticationError:
                    return False
                return True

            await wait_until(key_known, timeout_s=10)
            for _ in range(BEFORE_WIPE - 1):
                await asyncio.to_thread(ask, client)

        async def snapshot_holds_it() -> bool:
            return snapshot_spend(state_file, "team/default/wipe") == BEFORE_WIPE * cost_nanos

        await wait_until(snapshot_holds_it, timeout_s=5)
    finally:
        first.stop()
    second = start_embedded(tmp_path, upstream, 2)
    try:
        with openai.OpenAI(base_url=f"{second.url}/v1", api_key=KEY, max_retries=0) as client:
            served, unauthorized = await asyncio.to_thread(served_until_refused, client, 0.0)
        assert (BEFORE_WIPE + served, unauthorized) == (BUDGET_REQUESTS, [])
    finally:
        second.stop()
