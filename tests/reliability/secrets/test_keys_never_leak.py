"""Drive traffic with known keys through a sidecar, then look for the keys everywhere
the system writes: the sidecar's log, /metrics, every Redis key and value, every
response, and what the upstream received. Client keys may appear only as their SHA-256;
the upstream's credential never reaches a client, and a client's key never the upstream.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterable

import aiohttp
import pytest
from redis.asyncio import Redis, RedisCluster
from tests.e2e.sidecar.processes import LLMQUOTA
from tests.reliability.harness import wait_until
from tests.reliability.rig import UPSTREAM_KEY, Rig

from llmquota.policy.key_hash import hash_key

pytestmark = pytest.mark.e2e

KEY = "sk-secret-sweep-alpha-7f3c9a"
BROKE_KEY = "sk-secret-sweep-broke-1d2e8b"
UNKNOWN_KEY = "sk-secret-sweep-unknown-5a6b"
BROKEN_SECRET_KEY = "sk-secret-sweep-yaml-4c4c4c"
CLIENT_KEYS = (KEY, BROKE_KEY, UNKNOWN_KEY, BROKEN_SECRET_KEY)
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {{name: sweep}}
spec: {{models: [gpt-4o-mini, text-embedding-3-small], budget: {{maxBudget: 10}}}}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: alpha}}
spec: {{team: sweep}}
---
apiVersion: v1
kind: Secret
metadata: {{name: alpha}}
stringData: {{key: {KEY}}}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: broke}}
spec: {{team: sweep, budget: {{maxBudget: 0}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: broke}}
stringData: {{key: {BROKE_KEY}}}
"""
BROKEN_SECRET = f"""
apiVersion: v1
kind: Secret
metadata: {{name: yaml-typo}}
stringData:
  key: {BROKEN_SECRET_KEY} : [
"""
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def everything_in_redis(redis: Redis | RedisCluster) -> str:
    """Every key name and value in the database, as one text."""
    dumped: list[str] = []
    async for name in redis.scan_iter(count=500):
        kind = await redis.type(name)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value: object
        if kind == "string":
            value = await redis.get(name)
        elif kind == "hash":
            value = await redis.hgetall(name)
        elif kind == "set":
            value = await redis.smembers(name)
        elif kind == "zset":
            value = await redis.zrange(name, 0, -1, withscores=True)
        elif kind == "list":
            value = await redis.lrange(name, 0, -1)
        else:
            value = kind
        dumped.append(f"{name!r} {value!r}")
    return "\n".join(dumped)


def assert_absent(where: str, text: str, secrets: Iterable[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret} found in {where}"
        assert secret.removeprefix("sk-") not in text, f"{secret} found in {where}"


async def test_keys_appear_nowhere_but_as_their_hash(rig: Rig) -> None:
    policies = await rig.apply(MANIFESTS)
    sidecar = rig.start_sidecar()
    await rig.wait_for_policies(policies.values())
    # A broken folder is reported (on /readyz, in the log, by `llmquota check`) naming the
    # file and the line, never quoting it.
    (rig.manifests / "broken-secret.yaml").write_text(BROKEN_SECRET)
    checked = await asyncio.to_thread(
        subprocess.run,
        [*LLMQUOTA, "check", "--manifests", str(rig.manifests)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 1
    assert "broken-secret.yaml: yaml: " in checked.stdout

    answers: list[str] = [checked.stdout, checked.stderr]
    proxied = 0  # requests to /v1/..., each logs one line (written in batches)

    async def call(method: str, path: str, key: str | None, body: object = None,
                   header: str = "Authorization") -> int:  # fmt: skip
        nonlocal proxied
        headers = {} if key is None else {header: f"Bearer {key}" if header == "Authorization"
                                          else key}  # fmt: skip
        async with session.request(
            method, f"{sidecar.url}{path}", json=body, headers=headers
        ) as response:
            answers.append(f"{response.status} {dict(response.headers)!r} {await response.text()}")
            proxied += path.startswith("/v1/")
            return response.status

    async with aiohttp.ClientSession() as session:

        async def not_ready() -> bool:
            return await call("GET", "/readyz", None) == 503

        await wait_until(not_ready, timeout_s=10)
        assert await call("POST", "/v1/chat/completions", KEY, CHAT) == 200
        assert await call("POST", "/v1/chat/completions", KEY, {**CHAT, "stream": True}) == 200
        embedding = {"model": "text-embedding-3-small", "input": "hi"}
        assert await call("POST", "/v1/embeddings", KEY, embedding, header="x-api-key") == 200
        assert await call("GET", "/v1/models", KEY, header="api-key") == 200
        assert await call("POST", "/v1/chat/completions", KEY, {**CHAT, "model": "gpt-4o"}) == 403
        assert await call("POST", "/v1/chat/completions", BROKE_KEY, CHAT) == 402
        assert await call("POST", "/v1/chat/completions", UNKNOWN_KEY, CHAT) == 401
        assert await call("POST", "/v1/chat/completions", BROKEN_SECRET_KEY, CHAT) == 401
        assert await call("POST", "/v1/chat/completions", KEY, "not an object") == 400
        assert await call("POST", "/v1/chat/completions", None, CHAT) == 401
        async with session.get(f"{sidecar.url}/metrics") as metrics:
            metrics_text = await metrics.text()
        async with session.get(f"{rig.upstream.url}/_fake/requests") as recorded:
            upstream_requests = (await recorded.json())["requests"]

    async def every_request_logged() -> bool:
        text = sidecar.log_text().splitlines()
        entries: list[dict[str, object]] = [json.loads(line) for line in text if line[:1] == "{"]
        return sum(entry.get("msg") == "request" for entry in entries) >= proxied

    await wait_until(every_request_logged, 5, what=f"{proxied} request log lines")

    assert_absent("the sidecar's responses", "\n".join(answers), [*CLIENT_KEYS, UPSTREAM_KEY])
    assert_absent("the sidecar's log", sidecar.log_text(), [*CLIENT_KEYS, UPSTREAM_KEY])
    assert_absent("/metrics", metrics_text, [*CLIENT_KEYS, UPSTREAM_KEY])
    stored = await everything_in_redis(rig.store.redis)
    assert_absent("Redis", stored, [*CLIENT_KEYS, UPSTREAM_KEY])
    assert hash_key(KEY) in stored  # known by its hash, and only so
    assert_absent("what the upstream received", json.dumps(upstream_requests), CLIENT_KEYS)
    assert upstream_requests
    for upstream_request in upstream_requests:
        assert upstream_request["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert "x-api-key" not in upstream_request["headers"]
        assert "api-key" not in upstream_request["headers"]
