"""Fixtures of the reliability tests: a Redis that a test may kill and bring back, the
fake upstream, and a rig of sidecars over them.

Each test gets its own Redis and sidecars (a crash must not leak into the next test);
the fake upstream is shared by the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.e2e.sidecar.processes import Process, start
from tests.reliability.harness import free_port
from tests.reliability.rig import UPSTREAM_KEY, CrashableRedis, Rig

from llmquota.store import QuotaStore

__all__ = ["crashable_redis", "rig", "upstream"]


@pytest.fixture
def crashable_redis(tmp_path: Path) -> Iterator[CrashableRedis]:
    """A private redis-server that the test may kill and restart."""
    redis = CrashableRedis(tmp_path / "redis")
    yield redis
    redis.stop()


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The fake upstream, answering only requests that carry the sidecars' credential."""
    port = free_port()
    log = tmp_path_factory.mktemp("reliability-upstream") / "fake-upstream.log"
    process = start(
        ["fake-upstream", "--listen", f"127.0.0.1:{port}", "--require-key", UPSTREAM_KEY],
        log,
        f"http://127.0.0.1:{port}",
        "/_fake/requests",
    )
    yield process
    process.stop()


@pytest.fixture
async def rig(
    tmp_path: Path, crashable_redis: CrashableRedis, upstream: Process
) -> AsyncIterator[Rig]:
    """A fresh rig; every sidecar it started is stopped afterwards."""
    store = QuotaStore.from_url(crashable_redis.url, socket_connect_timeout=0.5)
    made = Rig(tmp_path, crashable_redis, upstream, store)
    yield made
    made.close()
    await store.close()
