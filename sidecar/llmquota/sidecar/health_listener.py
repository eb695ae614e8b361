"""`--health-listen`: /healthz, /readyz and /metrics on a second address, the Pod's IP.

The proxy listens on 127.0.0.1 so that nothing outside the Pod can spend its keys'
budgets; the kubelet's probes and Prometheus come from outside the Pod, so they get an
address of their own that serves the three read-only endpoints and nothing else.
When that address is taken (several sidecars on one machine, outside Kubernetes) the
sidecar says so in its log and runs on: the endpoints stay on `--listen` too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from llmquota.sidecar import probes
from llmquota.sidecar.state import METRICS, POLICIES, SETTINGS, STANDALONE, STORE

__all__ = ["health_listener_ctx"]

logger = logging.getLogger(__name__)


def _health_app(app: web.Application) -> web.Application:
    """An application with only the probes, reading the sidecar's own state."""
    health = web.Application()
    health[STORE] = app[STORE]
    health[POLICIES] = app[POLICIES]
    health[STANDALONE] = app[STANDALONE]
    health[METRICS] = app[METRICS]
    health.router.add_get("/healthz", probes.healthz)
    health.router.add_get("/readyz", probes.readyz)
    health.router.add_get("/metrics", probes.metrics)
    return health


async def health_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """Serve the probes on `settings.health_listen` for the app's lifetime (if set)."""
    listen = app[SETTINGS].health_listen
    if listen is None:
        yield
        return
    host, port = listen
    runner = web.AppRunner(_health_app(app), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        logger.warning("--health-listen %s:%d unavailable, probes on --listen only: %s",
                       host, port, error)  # fmt: skip
    else:
        logger.info("health, readiness and metrics on http://%s:%d", host, port)
    yield
    await runner.cleanup()
