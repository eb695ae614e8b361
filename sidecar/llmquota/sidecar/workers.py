"""`--workers N`: one llmquota serving many Pods (the shared gateway), on N cores.

One sidecar process runs one event loop, so it uses one core: beside a workload that is
what it should use. A gateway that serves a namespace's or a cluster's Pods needs more,
so with `--workers N` the command forks N processes that each run the whole sidecar and
listen on the same address with SO_REUSEPORT: the kernel spreads new connections across
them. Nothing is shared in memory: each worker has its own policy cache, store
connection and metrics. The counters all live in Redis, so N workers enforce the limits
exactly as N sidecar replicas do (an embedded redis-server, without `--redis`, is started
once, here, for all of them).

Each worker serves `--health-listen` on the port after the previous one's (worker 0 on
the port given), so Prometheus scrapes each worker's own metrics. The parent only waits:
SIGTERM or SIGINT is passed on to every worker (each drains as a single sidecar does),
and a worker that dies takes the others down with it, so the container restarts whole
rather than serve on with fewer workers than it was given. A worker that has not ended
`--shutdown-timeout` plus `STOP_GRACE_S` after it was told to is killed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from llmquota.sidecar.settings import SidecarSettings
from llmquota.store import EmbeddedRedis
from llmquota.store.embedded import signalled_at_parent_death

__all__ = ["STOP_GRACE_S", "run_workers", "worker_settings"]

logger = logging.getLogger(__name__)

# A worker told to stop has --shutdown-timeout to drain and this long to clean up;
# after that it is killed (its reservations expire with their leases).
STOP_GRACE_S = 10.0
_REAP_INTERVAL_S = 0.1


def worker_settings(settings: SidecarSettings, index: int) -> SidecarSettings:
    """What worker `index` is told: the shared listen address, its own health port."""
    health = settings.health_listen
    if health is not None:
        health = (health[0], health[1] + index)
    return replace(settings, reuse_port=True, health_listen=health)


def run_workers(
    settings: SidecarSettings, count: int, serve_worker: Callable[[SidecarSettings], int]
) -> int:
    """Fork `count` workers, each `serve_worker(its settings)`; wait for all of them.

    0 when they all ended after SIGTERM/SIGINT, else 1 (a worker died on its own).
    """
    with contextlib.ExitStack() as stack:
        if settings.redis_url is None:
            embedded = stack.enter_context(EmbeddedRedis())
            settings = replace(settings, redis_url=embedded.url)
        workers = _fork_all(settings, count, serve_worker)
        return _wait(workers, settings.shutdown_timeout + STOP_GRACE_S)


def _fork_all(
    settings: SidecarSettings, count: int, serve_worker: Callable[[SidecarSettings], int]
) -> set[int]:
    workers: set[int] = set()
    die_with_parent = signalled_at_parent_death()
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: serve, then leave without the parent's cleanups
            code = 1
            try:
                if die_with_parent is not None:  # SIGTERM: it drains as when told to stop
                    die_with_parent()
                code = serve_worker(worker_settings(settings, index))
            finally:
                os._exit(code)
        workers.add(pid)
    return workers


def _wait(workers: set[int], stop_timeout_s: float) -> int:
    """Pass SIGTERM/SIGINT on; reap workers; stop them all when one dies on its own, and
    kill those still there `stop_timeout_s` after they were told to stop."""
    stop_by: list[float] = []  # set once: when the workers must be gone

    def stop(signum: int, _frame: FrameType | None) -> None:
        if not stop_by:
            stop_by.append(time.monotonic() + stop_timeout_s)
        _signal_all(workers, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        while workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                workers.discard(pid)
                if not stop_by:
                    logger.error("worker %d ended (status %d); stopping the others", pid, status)
                    failed = True
                    stop(signal.SIGTERM, None)
                continue
            if stop_by and time.monotonic() > stop_by[0]:
                logger.error("%d workers did not stop in time; killing them", len(workers))
                _signal_all(workers, signal.SIGKILL)
                stop_by[0] = math.inf
            time.sleep(_REAP_INTERVAL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0


def _signal_all(workers: set[int], sig: signal.Signals) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
