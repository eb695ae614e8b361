"""A rig for sidecar failure tests: a Redis the test may kill, the fake upstream, and
`llmquota sidecar` processes in standalone mode that the test may start and SIGKILL.

Each test gets its own Redis and sidecars (a crash must not leak into the next test);
the fake upstream is shared. Processes are started with the helpers of the sidecar's
own end-to-end suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from tests.e2e.sidecar.processes import Process, free_port, start, start_sidecar
from tests.reliability.conftest import CrashableRedis
from tests.reliability.harness import policies_from_yaml, wait_until

from llmquota.policy import keyspace
from llmquota.policy.resolved import ResolvedPolicy
from llmquota.store import QuotaStore

__all__ = ["UPSTREAM_KEY", "Rig", "rig", "upstream"]

UPSTREAM_KEY = "sk-upstream-real"
"""The credential start_sidecar gives sidecars; the fake upstream requires it."""


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
