"""`--workers N`: N processes on one port, enforcing one set of limits, stopped together."""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import openai
import pytest
import redis
from tests.e2e.sidecar.processes import Process, start_sidecar, team_and_key
from tests.support.waiting import wait_until_sync

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key
from llmquota.store import EmbeddedRedis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "sk-gateway-workers-1"
RPM = 20
STOP_TIMEOUT_S = 20.0
MINUTE_LEFT_S = 40
"""The rpm counts Redis' clock minute: the requests start with this much of it left, so a
rollover mid-test (which lets another RPM through) cannot pass for a broken limit."""


def _workers(process: Process) -> list[int]:
    pid = process.popen.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _gateway(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, upstream: Process
) -> Process:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "gateway.yaml").write_text(
        team_and_key("gateway-team", "gateway-key", KEY, key_fields=f"rateLimit: {{rpm: {RPM}}}")
    )
    process = start_sidecar(
        tmp_path, manifests, redis_url, upstream, "--workers", "2", "--health-listen", "off",
        "--shutdown-timeout", "2",
    )  # fmt: skip
    wait_until_sync(
        lambda: process.log_text().count("listening on") == 2, 30.0, what="both workers up"
    )
    policy = keyspace.policy_key(hash_key(KEY))
    wait_until_sync(
        functools.partial(redis_client.exists, policy), 10.0, what="the key's policy loaded"
    )
    return process


def test_workers_share_the_port_and_one_rate_limit(
    tmp_path: Path,
    sidecar_redis: EmbeddedRedis,
    redis_client: redis.Redis,
    fake_upstream: Process,
) -> None:
    gateway = _gateway(tmp_path, sidecar_redis.url, redis_client, fake_upstream)
    try:
        assert len(_workers(gateway)) == 2
        wait_until_sync(
            lambda: redis_client.time()[0] % 60 < 60 - MINUTE_LEFT_S,
            61.0,
            what=f"a Redis minute with {MINUTE_LEFT_S} s left",
        )
        started_minute = redis_client.time()[0] // 60
        statuses: list[int] = []
        workers_seen: set[str] = set()
        for _ in range(2 * RPM):
            # A client of its own per request: a new connection, which the kernel hands
            # to either worker.
            with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0) as client:
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                    )
                except openai.RateLimitError as error:
                    statuses.append(error.status_code)
                    workers_seen.add(error.response.headers["x-request-id"][:16])
                else:
                    statuses.append(raw.http_response.status_code)
                    workers_seen.add(raw.headers["x-request-id"][:16])
        assert redis_client.time()[0] // 60 == started_minute, "the run outlasted its minute"
        assert statuses.count(200) == RPM
        assert statuses.count(429) == RPM
        assert len(workers_seen) == 2  # each worker's request ids have their own prefix
    finally:
        gateway.stop()
    assert gateway.popen.returncode == 0


def test_a_worker_that_dies_takes_the_gateway_down(
    tmp_path: Path,
    sidecar_redis: EmbeddedRedis,
    redis_client: redis.Redis,
    fake_upstream: Process,
) -> None:
    gateway = _gateway(tmp_path, sidecar_redis.url, redis_client, fake_upstream)
    try:
        first, second = _workers(gateway)
        os.kill(first, signal.SIGKILL)
        wait_until_sync(
            lambda: gateway.popen.poll() is not None, STOP_TIMEOUT_S, what="the gateway's exit"
        )
        assert gateway.popen.returncode == 1
        wait_until_sync(
            lambda: (
                not Path(f"/proc/{second}/status").exists()
                or "zombie" in Path(f"/proc/{second}/status").read_text()
            ),
            STOP_TIMEOUT_S,
            what="the other worker's exit",
        )
    finally:
        gateway.stop()
