"""Settled spend and asynchronous replication: `WAIT` for replicas after a settle.

Redis replicates asynchronously: a primary that dies can take its last writes with it,
and a Sentinel failover then promotes a replica that never saw them. For an admission
that loses little (a reservation that never reached the replica is simply not held), but a
lost settle is spend that was served and is never counted. With `ReplicaWait` the settle
and a `WAIT <replicas> <timeout>` go out together on one connection (WAIT counts the
replicas that hold that connection's writes), so a settle is acknowledged only once a
replica has it, or the timeout passed. The settle runs after the response, off the
request path: the cost is the settle's own latency, not the client's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["ReplicaWait", "run_replicated"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """How many replicas must hold a settle, and how long to wait for them at most."""

    replicas: int
    timeout_ms: int


async def run_replicated(
    redis: Redis,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[str | int],
    wait: ReplicaWait,
) -> int:
    """Run `script` and WAIT in one pipeline; the script's answer.

    When fewer replicas acknowledged within the timeout, the write still stands on the
    primary (Redis cannot take it back): it is logged, as spend a failover now could lose.
    """
    async with redis.pipeline(transaction=False) as pipe:
        await script(keys=list(keys), args=list(args), client=pipe)
        pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
        answer, acknowledged = await pipe.execute()
    if int(acknowledged) < wait.replicas:
        logger.warning(
            "a settle reached %d of %d replicas within %d ms; a failover now would lose it",
            int(acknowledged),
            wait.replicas,
            wait.timeout_ms,
        )
    return int(answer)
