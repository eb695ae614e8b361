"""`create_app(settings)`: the sidecar as an aiohttp application.

Everything with a lifetime is opened in `cleanup_ctx`, in order (store, upstream
session, background tasks), and closed in reverse once aiohttp has drained the requests
in flight; reservations of requests cut off by the shutdown timeout are then freed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from llmquota.manifests import ManifestResolver, parse_global_budget_ref
from llmquota.pricing import load_price_table
from llmquota.sidecar import handlers, probes
from llmquota.sidecar.budget_gauges import BudgetGauges
from llmquota.sidecar.credentials import UpstreamCredential
from llmquota.sidecar.health_listener import health_listener_ctx
from llmquota.sidecar.leases import InFlight
from llmquota.sidecar.metrics import SidecarMetrics
from llmquota.sidecar.policies import PolicyCache
from llmquota.sidecar.recording import recorded
from llmquota.sidecar.settings import SidecarSettings
from llmquota.sidecar.standalone import Standalone, StandaloneStatus
from llmquota.sidecar.state import (
    BUDGET_GAUGES,
    CREDENTIAL,
    IN_FLIGHT,
    METRICS,
    POLICIES,
    PRICES,
    SETTINGS,
    STANDALONE,
    STORE,
    UPSTREAM,
    WORKLOADS,
)
from llmquota.sidecar.workload_identity import WorkloadPolicies, read_identity
from llmquota.store import EmbeddedRedis, QuotaStore

__all__ = ["POST_ENDPOINTS", "create_app"]

POST_ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")
# A Redis that stops answering must turn into 503s (or fail-open), not hung requests.
REDIS_SOCKET_TIMEOUT_S = 2.0
UPSTREAM_CONNECT_TIMEOUT_S = 10.0
# redis-py's default of 100 would turn a burst of concurrent requests into errors.
REDIS_MAX_CONNECTIONS = 1024


def create_app(settings: SidecarSettings) -> web.Application:
    """The sidecar for `settings`; serve with `web.run_app` or aiohttp's test server."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[PRICES] = load_price_table(settings.pricing)
    app[METRICS] = SidecarMetrics.create(app[PRICES], settings.workload or "")
    app[CREDENTIAL] = UpstreamCredential(settings.upstream_key_file)
    app[STANDALONE] = StandaloneStatus()
    parse_global_budget_ref(settings.global_budget)  # refuse a bad flag before starting
    app.cleanup_ctx.extend([_store_ctx, _upstream_ctx, _background_ctx, health_listener_ctx])
    proxy_post, list_models = recorded(handlers.proxy_post), recorded(handlers.list_models)
    for prefix in ("/v1", ""):
        for endpoint in POST_ENDPOINTS:
            app.router.add_post(f"{prefix}/{endpoint}", proxy_post)
        app.router.add_get(f"{prefix}/models", list_models)
    app.router.add_get("/healthz", probes.healthz)
    app.router.add_get("/readyz", probes.readyz)
    app.router.add_get("/metrics", probes.metrics)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    """The store, on `--redis` or on an embedded redis-server of this process's own."""
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        url = settings.redis_url
        if url is None:
            url = (await stack.enter_async_context(EmbeddedRedis())).url
        store = QuotaStore.from_url(
            url,
            replica_wait=settings.replica_wait,
            password_file=settings.redis_password_file,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            max_connections=REDIS_MAX_CONNECTIONS,
        )
        stack.push_async_callback(store.close)
        app[STORE] = store
        identity = read_identity(settings.identity_dir, settings.workload)
        app[WORKLOADS] = WorkloadPolicies(store, identity)
        app[POLICIES] = PolicyCache(store, also=app[WORKLOADS].invalidate)
        app[IN_FLIGHT] = InFlight(store, settings.lease_ms, app[METRICS])
        app[BUDGET_GAUGES] = BudgetGauges(store, app[METRICS])
        yield
        # Requests still in flight after the drain were cut off: free what they hold.
        await app[IN_FLIGHT].abort_all(settings.shutdown_timeout)


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """One pooled, keep-alive session to the upstream for every request."""
    settings = app[SETTINGS]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=UPSTREAM_CONNECT_TIMEOUT_S,
            sock_read=settings.upstream_timeout,
        ),
        # No proxy/netrc lookups from the environment: aiohttp would redo them per request.
        trust_env=False,
        # One session serves every client: a cookie the upstream sets for one must not go
        # back upstream with another's requests (and jar lookups cost every request).
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    app[UPSTREAM] = session
    yield
    await session.close()


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """Policy invalidation, lease renewal, budget gauges and (standalone) manifest
    following."""
    settings = app[SETTINGS]
    jobs: list[Coroutine[Any, Any, None]] = [
        app[POLICIES].follow_changes(),
        app[IN_FLIGHT].renew_forever(),
        app[BUDGET_GAUGES].refresh_forever(),
    ]
    if settings.manifests is None:
        app[STANDALONE].loaded.set()
    else:
        resolver = ManifestResolver(parse_global_budget_ref(settings.global_budget))
        standalone = Standalone(
            settings.manifests, resolver, app[STORE], settings.state_file, app[STANDALONE]
        )
        jobs.append(standalone.run())
    tasks = [asyncio.create_task(job) for job in jobs]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
