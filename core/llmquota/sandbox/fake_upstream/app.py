"""The fake OpenAI-compatible upstream as an aiohttp application.

Every API request goes through one admission step before its handler: record it (so a
test can check what the sidecar really sent, credentials included), check the key,
resolve its faults, wait out latency, and parse the body. `/_fake/requests` exposes
the recordings.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from llmquota.sandbox.fake_upstream import endpoints
from llmquota.sandbox.fake_upstream.endpoints import Exchange
from llmquota.sandbox.fake_upstream.faults import (
    FAULT_HEADER,
    FaultPlan,
    FaultSpecError,
    parse_faults,
)
from llmquota.sandbox.fake_upstream.replies import error_envelope
from llmquota.sandbox.fake_upstream.settings import FakeUpstreamSettings
from llmquota.sandbox.fake_upstream.transmit import send_error

__all__ = ["RECORDED_REQUESTS", "SETTINGS", "create_app"]

RecordedRequest = dict[str, Any]
Handler = Callable[[web.Request, Exchange], Awaitable[web.StreamResponse]]

SETTINGS = web.AppKey("settings", FakeUpstreamSettings)
RECORDED_REQUESTS = web.AppKey[deque[RecordedRequest]]("recorded_requests")

_POST_ROUTES: dict[str, Handler] = {
    "/chat/completions": endpoints.chat_completions,
    "/completions": endpoints.completions,
    "/embeddings": endpoints.embeddings,
    "/responses": endpoints.responses,
}


def create_app(settings: FakeUpstreamSettings) -> web.Application:
    """The application for `settings`; serve it with `web.run_app` or aiohttp's test server."""
    app = web.Application()
    app[SETTINGS] = settings
    app[RECORDED_REQUESTS] = deque(maxlen=settings.recorded_requests)
    for prefix in ("/v1", ""):
        for path, handler in _POST_ROUTES.items():
            app.router.add_post(prefix + path, _admitted(handler))
        app.router.add_get(prefix + "/models", _admitted(endpoints.list_models))
    app.router.add_get("/_fake/requests", _recorded_requests)
    app.router.add_delete("/_fake/requests", _forget_requests)
    return app


def _admitted(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def admit_then_handle(request: web.Request) -> web.StreamResponse:
        admission = await _admit(request)
        if isinstance(admission, web.Response):
            return admission
        return await handler(request, admission)

    return admit_then_handle


async def _admit(request: web.Request) -> Exchange | web.Response:
    """The request's `Exchange`, or the error reply that takes the handler's place."""
    settings = request.app[SETTINGS]
    body = _json_or_none(await request.read())
    request.app[RECORDED_REQUESTS].append(_recording(request, body))
    if settings.require_key is not None and not _has_key(request, settings.require_key):
        return send_error(
            401, error_envelope(401, "Incorrect API key provided.", "invalid_api_key")
        )
    fault_spec = request.headers.get(FAULT_HEADER)
    try:
        faults = settings.fault if fault_spec is None else parse_faults(fault_spec)
    except FaultSpecError as error:
        return send_error(400, error_envelope(400, str(error), "invalid_fake_fault"))
    wait_seconds = settings.latency_ms / 1000 + faults.delay_seconds
    if wait_seconds > 0:
        await asyncio.sleep(wait_seconds)
    refusal = _refusal(request.method, body, faults)
    if refusal is not None:
        return refusal
    return Exchange(settings, body if isinstance(body, dict) else {}, faults)


def _json_or_none(raw_body: bytes) -> Any:
    """The parsed body; None when empty or not JSON (a POST then gets a 400)."""
    try:
        return json.loads(raw_body) if raw_body else None
    except ValueError:
        return None


def _refusal(method: str, body: Any, faults: FaultPlan) -> web.Response | None:
    """The injected error status, or a 400 for a body OpenAI would refuse too."""
    if faults.status is not None:
        message = f"fake upstream fault: status {faults.status}"
        code = "rate_limit_exceeded" if faults.status == 429 else None
        return send_error(faults.status, error_envelope(faults.status, message, code))
    if method != "POST":
        return None
    if not isinstance(body, dict):
        return send_error(400, error_envelope(400, "The request body must be a JSON object."))
    if not isinstance(body.get("model"), str):
        return send_error(400, error_envelope(400, "You must provide a model parameter."))
    return None


def _has_key(request: web.Request, key: str) -> bool:
    return request.headers.get("Authorization") == f"Bearer {key}"


def _recording(request: web.Request, body: Any) -> RecordedRequest:
    """What `/_fake/requests` shows of a request; header names lower-cased."""
    return {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "headers": {name.lower(): value for name, value in request.headers.items()},
        "json": body,
    }


async def _recorded_requests(request: web.Request) -> web.StreamResponse:
    """`GET /_fake/requests`: recent API requests, oldest first."""
    recorded = request.app[RECORDED_REQUESTS]
    return web.json_response({"requests": list(recorded)})


async def _forget_requests(request: web.Request) -> web.StreamResponse:
    """`DELETE /_fake/requests`: start the recording afresh."""
    request.app[RECORDED_REQUESTS].clear()
    return web.Response(status=204)
