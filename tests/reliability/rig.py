"""A rig for failure tests: a Redis the test may kill, the fake upstream, and
`llmquota sidecar` processes in standalone mode that the test may start and SIGKILL.

Processes are started with the helpers of the sidecar's own end-to-end suite; the
fixtures that build a rig are in this folder's conftest.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from tests.e2e.sidecar.processes import Process, start_sidecar
from tests.reliability.harness import policies_from_yaml, wait_until
from tests.support.redis_server import loopback_port

from llmquota.policy import keyspace
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis, QuotaStore

__all__ = ["UPSTREAM_KEY", "CrashableRedis", "Rig"]

UPSTREAM_KEY = "sk-upstream-real"
"""The credential start_sidecar gives sidecars; the fake upstream requires it."""


class CrashableRedis:
    """A redis-server with AOF on a fixed port and directory, so it can die and return.

    Clients keep the same URL across `kill` and `restart`, as sidecars keep theirs when
    the Redis pod is rescheduled.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = loopback_port()
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


@dataclass
class Rig:
    """Sidecars over one Redis and one manifests folder, and a store to read counters."""

    directory: Path
    redis: CrashableRedis
    upstream: Process
    store: QuotaStore
    manifests: Path = field(init=False)
    sidecars: list[Process] = field(default_factory=list)
    clients: list[openai.OpenAI] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.manifests = self.directory / "manifests"
        self.manifests.mkdir()

    async def apply(self, text: str) -> dict[str, ResolvedPolicy]:
        """Write manifests for the sidecars; their policies by ApiKey name, once stored."""
        (self.manifests / "test.yaml").write_text(text)
        policies = policies_from_yaml(text)
        if self.sidecars:
            await self.wait_for_policies(policies.values())
        return policies

    async def wait_for_policies(self, policies: Iterable[ResolvedPolicy]) -> None:
        """Wait until the sidecars wrote these policies into Redis."""
        names = [keyspace.policy_key(policy.key_hash) for policy in policies]

        async def stored() -> bool:
            return bool(await self.store.redis.exists(*names) == len(names))

        await wait_until(stored, timeout_s=15)

    def start_sidecar(self, *flags: str) -> Process:
        """One more sidecar on this rig's Redis and manifests; ready when returned."""
        directory = self.directory / f"sidecar-{len(self.sidecars)}"
        directory.mkdir()
        process = start_sidecar(directory, self.manifests, self.redis.url, self.upstream, *flags)
        self.sidecars.append(process)
        return process

    def client(self, sidecar: Process, key: str, **options: Any) -> openai.OpenAI:
        """The official client for `sidecar`, without retries; closed after the test."""
        made = openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=key, max_retries=0, **options)
        self.clients.append(made)
        return made

    async def spend(self, policy: ResolvedPolicy, kind: str = "key") -> tuple[int, int]:
        """Settled and reserved nano-USD of the policy's scope of `kind`."""
        scope = next(scope for scope in policy.scopes if scope.kind == kind)
        (counter,) = await self.store.read_budgets([(scope.tag, scope.id)])
        return counter.spend_nanos, counter.reserved_nanos

    async def in_flight(self, policy: ResolvedPolicy, kind: str = "key") -> int:
        """Parallel slots the scope of `kind` holds."""
        scope = next(scope for scope in policy.scopes if scope.kind == kind)
        held = await self.store.redis.hget(keyspace.parallel_key(scope.tag, scope.id), "all")
        return int(held or 0)

    def close(self) -> None:
        for made in self.clients:
            made.close()
        for process in self.sidecars:
            process.stop()
