"""Fixtures of the reliability tests: a Redis that a test may kill and bring back."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.reliability.harness import free_port

from llmquota.store import EmbeddedRedis

__all__ = ["CrashableRedis", "crashable_redis"]


class CrashableRedis:
    """A redis-server with AOF on a fixed port and directory, so it can die and return.

    Clients keep the same URL across `kill` and `restart`, as sidecars keep theirs when
    the Redis pod is rescheduled.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.server = EmbeddedRedis(directory, port=self.port).start()

    @property
    def url(self) -> str:
        """The URL clients connect with; the same before and after a restart."""
        return self.server.url

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no final AOF flush."""
        self.server.stop(kill=True)

    def restart(self, *, empty: bool = False) -> None:
        """Start again on the same data (`empty`: as a new pod without its volume)."""
        if empty:
            shutil.rmtree(self.directory / "appendonlydir", ignore_errors=True)
        self.server = EmbeddedRedis(self.directory, port=self.port).start()

    def stop(self) -> None:
        """Stop for good."""
        self.server.stop()


@pytest.fixture
def crashable_redis(tmp_path: Path) -> Iterator[CrashableRedis]:
    """A private redis-server that the test may kill and restart."""
    redis = CrashableRedis(tmp_path / "redis")
    yield redis
    redis.stop()
