"""`/healthz`, `/readyz` and `/metrics`: what kubelet and Prometheus ask."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmquota.sidecar.state import METRICS, POLICIES, STANDALONE, STORE
from llmquota.store import StoreError

__all__ = ["healthz", "metrics", "readyz"]

PING_TIMEOUT_S = 1.0


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the store answers, the change feed is subscribed, the policies are loaded
    (standalone: from a folder without problems, into a store that did not lose them)."""
    problems = []
    try:
        await asyncio.wait_for(request.app[STORE].ping(), PING_TIMEOUT_S)
    except (StoreError, TimeoutError) as error:
        problems.append(f"quota store unreachable: {error}")
    if not request.app[POLICIES].subscribed.is_set():
        problems.append("not subscribed to policy changes")
    problems.extend(request.app[STANDALONE].not_ready_reasons())
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text format."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
