"""The operator's Prometheus metrics (all of them, here) and the /healthz + /metrics server.

kopf serves liveness itself (its probe handlers) on a port of its own; so that one
HOST:PORT answers both the kubelet and Prometheus, this server passes /healthz through
to kopf's endpoint on loopback and serves /metrics next to it.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from llmquota.operator.config import HostPort

__all__ = [
    "BUDGET_EXHAUSTS_IN",
    "BUDGET_RESETS",
    "RECONCILE_DURATION",
    "RECONCILE_TOTAL",
    "STATUS_SYNC_SECONDS",
    "HealthServer",
    "ReconcileResult",
    "forget_exhaustion",
    "free_loopback_port",
    "measure_reconcile",
]

RECONCILE_TOTAL = Counter(
    "llmquota_reconcile_total",
    "Reconciliations by kind and result (ok, invalid, error).",
    ["kind", "result"],
)
RECONCILE_DURATION = Histogram(
    "llmquota_reconcile_duration_seconds",
    "Time to reconcile one object, by kind.",
    ["kind"],
)
BUDGET_RESETS = Counter(
    "llmquota_budget_resets_total",
    "Budget windows that reset with spend in the window that ended (one per subject per "
    "reset), by namespace and subject kind.",
    ["namespace", "kind"],
)
BUDGET_EXHAUSTS_IN = Gauge(
    "llmquota_budget_exhausts_in_seconds",
    "Seconds until the subject's budget runs out at its recent burn rate (the forecast); "
    "no series while there is no such moment (no maxBudget, nothing spent, too little history).",
    ["namespace", "kind", "name"],
)
STATUS_SYNC_SECONDS = Histogram(
    "llmquota_status_sync_seconds",
    "Time to sync one object's status from Redis counters.",
)


def free_loopback_port() -> int:
    """A port on 127.0.0.1 that is free right now (for kopf's internal liveness server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HealthServer:
    """/healthz (kopf's liveness, passed through) and /metrics on one listen address."""

    def __init__(self, listen: HostPort, liveness_url: str) -> None:
        """Serve on `listen`; `liveness_url` is kopf's own endpoint."""
        self.listen = listen
        self.liveness_url = liveness_url
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        assert self._session is not None
        try:
            async with self._session.get(self.liveness_url) as response:
                return web.Response(
                    status=response.status,
                    body=await response.read(),
                    content_type="application/json",
                )
        except aiohttp.ClientError as error:
            return web.json_response({"error": str(error)}, status=503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def start(self) -> None:
        """Start listening."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.listen.host, self.listen.port).start()

    async def stop(self) -> None:
        """Stop listening and close the client."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


def forget_exhaustion(namespace: str, kind: str, name: str) -> None:
    """Drop a subject's forecast series (no forecast now, or the subject is gone)."""
    with contextlib.suppress(KeyError):
        BUDGET_EXHAUSTS_IN.remove(namespace, kind, name)


class ReconcileResult:
    """How a measured reconcile ended; `result` is set by the code being measured."""

    def __init__(self) -> None:
        """Assume an error until told otherwise (an exception leaves it so)."""
        self.result = "error"


@contextlib.contextmanager
def measure_reconcile(kind: str) -> Iterator[ReconcileResult]:
    """Count and time one reconcile of `kind` (ok, invalid, error)."""
    outcome = ReconcileResult()
    started = time.perf_counter()
    try:
        yield outcome
    finally:
        RECONCILE_TOTAL.labels(kind=kind, result=outcome.result).inc()
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - started)
