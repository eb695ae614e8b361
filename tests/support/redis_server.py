"""One real redis-server for a whole test session, and clean databases inside it.

Tests of the store run the production Lua on a real server, never on a mock: the
properties that matter (atomicity under concurrency, Redis TIME, key expiry) only exist
there. Starting a server takes a fraction of a second, so a session shares one and each
test gets a flushed database.

`LLMQUOTA_TEST_REDIS_URL` points the suite at an existing Redis instead (a CI service);
its database is flushed by every test, so never point it at one that holds real data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from llmquota.store import EmbeddedRedis

__all__ = ["EXTERNAL_URL_VARIABLE", "RedisEndpoint", "flush", "session_redis"]

EXTERNAL_URL_VARIABLE = "LLMQUOTA_TEST_REDIS_URL"


@dataclass(frozen=True)
class RedisEndpoint:
    """Where the session's redis-server answers; `url` reaches its test database."""

    url: str


def flush(url: str) -> None:
    """Empty the database at `url` (synchronously, so any event loop may use it after)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def session_redis() -> Iterator[RedisEndpoint]:
    """The external Redis named by the environment, or a private redis-server."""
    external = os.environ.get(EXTERNAL_URL_VARIABLE)
    if external:
        yield RedisEndpoint(external)
        return
    with EmbeddedRedis() as server:
        yield RedisEndpoint(server.url)
