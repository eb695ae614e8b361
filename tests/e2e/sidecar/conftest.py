"""Processes for the sidecar's end-to-end tests: a real redis-server, the fake upstream
and `llmquota sidecar` in standalone mode, each started once per session.

Tests apply manifests by writing files into the sidecar's `--manifests` directory and
waiting until the key's policy is in Redis; each test uses its own key and team names.
The Redis is this folder's own, so that other suites flushing theirs cannot interfere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest
import redis
from tests.e2e.sidecar.processes import Process, Sidecar, free_port, start, start_sidecar

from llmquota.store import EmbeddedRedis


@pytest.fixture(scope="session")
def sidecar_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_client(sidecar_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(sidecar_redis.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    port = free_port()
    log = tmp_path_factory.mktemp("fake") / "fake-upstream.log"
    url = f"http://127.0.0.1:{port}"
    process = start(
        ["fake-upstream", "--listen", f"127.0.0.1:{port}", "--require-key", "sk-upstream-real"],
        log,
        url,
        "/_fake/requests",
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    sidecar_redis: EmbeddedRedis,
    redis_client: redis.Redis,
    fake_upstream: Process,
) -> Iterator[Sidecar]:
    directory = tmp_path_factory.mktemp("sidecar")
    manifests = directory / "manifests"
    manifests.mkdir()
    process = start_sidecar(directory, manifests, sidecar_redis.url, fake_upstream)
    yield Sidecar(process, manifests, redis_client)
    process.stop()


@pytest.fixture
def clients(sidecar: Sidecar) -> Iterator[Callable[..., openai.OpenAI]]:
    """Make official clients for the session's sidecar (by key); closed after the test."""
    made: list[openai.OpenAI] = []

    def client_for(key: str, url: str | None = None) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{url or sidecar.url}/v1", api_key=key, max_retries=0)
        made.append(client)
        return client

    yield client_for
    for client in made:
        client.close()
