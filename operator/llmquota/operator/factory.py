"""Builds the operator once at startup: clients, process context, services, loops.

Gafaelfawr's shape: startup calls `Factory.create`, puts the factory into kopf's `memo`,
and the thin handlers take their service from it; cleanup calls `aclose`. Nothing here
imports kopf: kopf's indexes come in as plain mappings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, Self

from llmquota.operator.config import OperatorConfig
from llmquota.operator.services.keys import KeyService
from llmquota.operator.services.mirroring import keep_mirrors, mirror_sources
from llmquota.operator.services.orphan_sweep import keep_policies_owned
from llmquota.operator.services.overrides import OverrideService
from llmquota.operator.services.recovery import watch_store
from llmquota.operator.services.references import ReferenceService
from llmquota.operator.services.status_sync import StatusSync
from llmquota.operator.services.status_writer import StatusWriter
from llmquota.operator.services.workloads import WorkloadService
from llmquota.operator.state import Indexes, OperatorState
from llmquota.operator.storage.kubernetes import KubernetesStorage
from llmquota.store import QuotaStore

__all__ = ["REDIS_CONNECTIONS", "Factory"]

REDIS_CONNECTIONS = 32
REDIS_POOL_TIMEOUT_S = 30.0
REDIS_SOCKET_TIMEOUT_S = 10.0


class Factory:
    """The operator's services over one process context (one per operator process)."""

    def __init__(self, state: OperatorState) -> None:
        """Build the services over `state`; `create` opens the clients first."""
        self.state = state
        self.status_writer = StatusWriter(state.kubernetes, state.conditions)
        self.keys = KeyService(state, self.status_writer)
        self.workloads = WorkloadService(state)
        self.references = ReferenceService(state, self.status_writer, self.keys, self.workloads)
        self.overrides = OverrideService(state, self.status_writer, self.keys, self.workloads)
        self.status_sync = StatusSync(
            state, self.status_writer, self.keys, self.references, self.overrides,
            workloads=self.workloads,
        )  # fmt: skip

    @classmethod
    async def create(cls, config: OperatorConfig, indexes: Mapping[str, Any]) -> Self:
        """Open Redis and the Kubernetes client; `indexes`: kopf's, by index id."""
        store = QuotaStore.from_url(
            config.redis_url,
            password_file=config.redis_password_file,
            max_connections=REDIS_CONNECTIONS,
            # Thousands of handlers run together at a cold start: callers wait for a
            # free connection instead of failing with "Too many connections".
            pool_timeout=REDIS_POOL_TIMEOUT_S,
            # A primary that stops answering (a failover, a partition) fails the call, to
            # be retried by kopf or the next sync, instead of hanging the operator on it.
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        )
        kubernetes = await KubernetesStorage.connect()
        return cls(
            OperatorState(
                config=config, store=store, kubernetes=kubernetes, indexes=Indexes.of(indexes)
            )
        )

    def start(self) -> None:
        """Start the background loops: Redis watchdog, status sync, orphan sweep, mirroring."""
        state = self.state
        loop = asyncio.get_running_loop()
        loops: list[Coroutine[Any, Any, None]] = [
            watch_store(state),
            self.status_sync.run(),
            keep_policies_owned(state),
        ]
        if mirror_sources(state.config):
            loops.append(keep_mirrors(state))
        state.background.extend(loop.create_task(coro) for coro in loops)

    async def aclose(self) -> None:
        """Stop the loops and close the clients."""
        for task in self.state.background:
            task.cancel()
        await asyncio.gather(*self.state.background, return_exceptions=True)
        await self.state.store.close()
        await self.state.kubernetes.close()
