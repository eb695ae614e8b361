"""The hot path's Redis calls (store/fast_path.py) against a real redis-server: answers
matched to their callers under concurrency, a forgotten script reloaded, errors as
redis-py raises them, timeouts, restarts, AUTH and SELECT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tests.integration.store.scenario import CENT, api_key, attempt, policy_for
from tests.support.redis_server import RedisEndpoint, flush, loopback_port

from llmquota.store import EmbeddedRedis, QuotaStore
from llmquota.store.errors import StoreUnavailable
from llmquota.store.fast_path import FastScripts, LuaScript

pytestmark = pytest.mark.integration

COUNT = LuaScript.of("return redis.call('INCR', KEYS[1])")
ECHO = LuaScript.of("return {KEYS[1], ARGV[1], ARGV[2]}")
FAILS = LuaScript.of("return redis.error_reply('ERR boom from the script')")
TIMEOUT_S = 0.5


def scripts_for(url: str, **options: object) -> FastScripts:
    fast = FastScripts.for_url(
        url,
        timeout_s=TIMEOUT_S,
        connect_timeout_s=TIMEOUT_S,
        **options,  # type: ignore[arg-type]
    )
    assert fast is not None
    return fast


@pytest.fixture
async def fast(redis_server: RedisEndpoint) -> AsyncIterator[FastScripts]:
    flush(redis_server.url)
    scripts = scripts_for(redis_server.url)
    yield scripts
    await scripts.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", port=loopback_port()).start()
    yield server
    server.cleanup()


async def test_concurrent_callers_each_get_their_own_answer(fast: FastScripts) -> None:
    answers = await asyncio.gather(*(fast.run(COUNT, ["hits"], []) for _ in range(500)))
    assert sorted(answers) == list(range(1, 501))
    echoes = await asyncio.gather(
        *(fast.run(ECHO, [f"key-{n}"], [f"ünï-{n}", n]) for n in range(200))
    )
    assert echoes == [
        [f"key-{n}".encode(), f"ünï-{n}".encode(), str(n).encode()] for n in range(200)
    ]


async def test_a_cancelled_caller_does_not_shift_the_answers_of_others(fast: FastScripts) -> None:
    calls = [asyncio.ensure_future(fast.run(ECHO, ["k"], [n, "x"])) for n in range(300)]
    await asyncio.sleep(0)  # every call is queued; now a third of the callers give up
    for cancelled in calls[::3]:
        cancelled.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    for n, result in enumerate(results):
        if n % 3 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == [b"k", str(n).encode(), b"x"]
    assert await fast.run(ECHO, ["after"], [1, 2]) == [b"after", b"1", b"2"]


async def test_a_script_the_server_forgot_is_loaded_again(
    fast: FastScripts, redis_server: RedisEndpoint
) -> None:
    assert await fast.run(COUNT, ["hits"], []) == 1
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.script_flush()
        answers = await asyncio.gather(*(fast.run(COUNT, ["hits"], []) for _ in range(20)))
        assert sorted(answers) == list(range(2, 22))
        assert client.script_exists(COUNT.sha.decode()) == [True]
    finally:
        client.close()


async def test_a_script_error_is_redis_pys_response_error_and_the_connection_stays(
    fast: FastScripts,
) -> None:
    with pytest.raises(ResponseError, match="boom from the script"):
        await fast.run(FAILS, [], [])
    assert await fast.run(COUNT, ["hits"], []) == 1


async def test_a_server_that_does_not_answer_times_out_and_the_next_call_reconnects() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fast = scripts_for(f"redis://127.0.0.1:{port}/0")
    try:
        for attempt in (1, 2):
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await fast.run(COUNT, ["hits"], [])
            assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 1.0
            assert len(connections) == attempt  # a timed-out connection is not reused
    finally:
        await fast.close()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_nothing_listening_is_a_connection_error_within_about_a_second() -> None:
    fast = scripts_for(f"redis://127.0.0.1:{loopback_port()}/0")
    started = time.monotonic()
    try:
        with pytest.raises(RedisConnectionError, match="Error connecting to Redis"):
            await fast.run(COUNT, ["hits"], [])
    finally:
        await fast.close()
    assert time.monotonic() - started < 3.0


async def test_a_restarted_server_is_reconnected_to(private_redis: EmbeddedRedis) -> None:
    fast = scripts_for(private_redis.url)
    try:
        assert await fast.run(COUNT, ["hits"], []) == 1
        in_flight = asyncio.ensure_future(fast.run(LuaScript.of("return 7"), [], []))
        private_redis.stop(kill=True)
        # The answer was lost with the server or came before: never another call's.
        outcome: list[object] = await asyncio.gather(in_flight, return_exceptions=True)
        assert outcome == [7] or isinstance(outcome[0], RedisConnectionError)
        with pytest.raises(RedisConnectionError):
            await fast.run(COUNT, ["hits"], [])
        private_redis.start()
        # A new process: its script cache is empty, so this is EVALSHA, NOSCRIPT, EVAL.
        assert await fast.run(COUNT, ["after-restart"], []) == 1
    finally:
        await fast.close()


async def test_password_file_and_database_of_the_url(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    try:
        admin.config_set("requirepass", "s3cret")
    finally:
        admin.close()
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    url = f"redis://127.0.0.1:{private_redis.port}/3"
    fast = scripts_for(url, password_file=password_file)
    try:
        assert await fast.run(COUNT, ["hits"], []) == 1
    finally:
        await fast.close()
    check = redis.Redis(port=private_redis.port, password="s3cret", db=3)
    try:
        assert check.get("hits") == b"1"
    finally:
        check.close()
    password_file.write_text("wrong\n")
    refused = scripts_for(url, password_file=password_file)
    try:
        with pytest.raises(AuthenticationError):
            await refused.run(COUNT, ["hits"], [])
    finally:
        await refused.close()


@pytest.mark.parametrize(
    "url",
    [
        "rediss://127.0.0.1:6379/0",
        "redis+sentinel://127.0.0.1:26379/service",
        "redis://127.0.0.1:6379/0?socket_timeout=5",
    ],
)
def test_urls_it_leaves_to_redis_py(url: str) -> None:
    assert FastScripts.for_url(url, timeout_s=1, connect_timeout_s=1) is None


def test_under_uvloop_as_the_sidecar_runs_it(redis_server: RedisEndpoint) -> None:
    uvloop = pytest.importorskip("uvloop")
    flush(redis_server.url)

    async def scenario() -> list[object]:
        fast = scripts_for(redis_server.url)
        try:
            answers: list[object] = await asyncio.gather(
                *(fast.run(COUNT, ["hits"], []) for _ in range(100))
            )
            return answers
        finally:
            await fast.close()

    assert sorted(uvloop.run(scenario())) == list(range(1, 101))


async def test_the_store_on_the_fast_path_raises_its_own_errors(
    redis_server: RedisEndpoint,
) -> None:
    """QuotaStore's admit and settle go through the fast path for these URLs, and what
    they raise is the store's StoreUnavailable, as through redis-py."""
    policy = policy_for(api_key("fast-bot", budget={"maxBudget": 1}))
    flush(redis_server.url)
    store = QuotaStore.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    down = QuotaStore.from_url(
        f"redis://127.0.0.1:{loopback_port()}/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    try:
        assert store._fast is not None  # the path under test
        admitted = await attempt(store, policy)
        assert admitted.admitted
        assert await store.settle(admitted.request_id, CENT, 10) == 1
        with pytest.raises(StoreUnavailable):
            await attempt(down, policy)
    finally:
        await store.close()
        await down.close()
