"""Putting replies on the wire, including the broken ways a real upstream fails.

With no chunk delay a whole stream goes out in one write: the fake must not be the
bottleneck when the benchmarks measure the sidecar.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from llmquota.sandbox.fake_upstream.faults import FaultPlan

__all__ = ["send_error", "send_events", "send_json"]

_JSON = "application/json"


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def send_error(status: int, envelope: Mapping[str, Any]) -> web.Response:
    """An error reply: never subject to faults, so tests see exactly the status they asked."""
    return web.Response(status=status, body=_dumps(envelope), content_type=_JSON)


async def send_json(
    request: web.Request, payload: Mapping[str, Any], faults: FaultPlan
) -> web.StreamResponse:
    """A JSON reply, truncated under `malformed-json`, cut off halfway under a reset."""
    body = _dumps(payload)
    if faults.malformed_json:
        body = body[: len(body) // 2]
    if not faults.reset_mid_stream:
        return web.Response(body=body, content_type=_JSON)
    response = web.StreamResponse()
    response.content_type = _JSON
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    return _reset(request, response)


async def send_events(
    request: web.Request,
    frames: Sequence[bytes],
    faults: FaultPlan,
    chunk_delay_seconds: float,
) -> web.StreamResponse:
    """A `text/event-stream` of `frames`, paced by the chunk delay; a reset stops halfway."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    sent = frames[: len(frames) // 2] if faults.reset_mid_stream else frames
    if chunk_delay_seconds > 0:
        for index, frame in enumerate(sent):
            if index:
                await asyncio.sleep(chunk_delay_seconds)
            await response.write(frame)
    else:
        await response.write(b"".join(sent))
    if faults.reset_mid_stream:
        return _reset(request, response)
    await response.write_eof()
    return response


def _reset(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Close the connection without finishing the body, as a crashed upstream would.

    `close` (not `abort`) so what was written still arrives: tests can count on exactly
    half the events.
    """
    if request.transport is not None:
        request.transport.close()
    return response
