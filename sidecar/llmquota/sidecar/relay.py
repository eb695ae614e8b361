"""Phase 3, relay: send the request upstream and pass its answer back.

The upstream's credential replaces the client's key on the way out and is redacted
from what comes back. A whole answer is held (up to `WHOLE_ANSWER_BUFFER_BYTES`) so it
can be settled first and carry its cost; a stream is passed on event by event and
settled before its end. A cut on either side ends the relay, not the accounting.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp import web

from llmquota.policy.decision import BUDGET_REMAINING_HEADER
from llmquota.sidecar.exchange import Exchange, Refusal
from llmquota.sidecar.settle import Bill
from llmquota.sidecar.state import CREDENTIAL, SETTINGS, UPSTREAM
from llmquota.sidecar.streaming import EventTooLongError, StreamMeter, stream_error_event
from llmquota.sidecar.wire import (
    UsageTail,
    client_response_headers,
    redact_bytes,
    upstream_request_headers,
    usage_in_body,
)

__all__ = [
    "WHOLE_ANSWER_BUFFER_BYTES",
    "read_at_most",
    "relay_stream",
    "relay_whole",
    "send_upstream",
    "too_large_upstream",
]

logger = logging.getLogger("llmquota.sidecar.requests")

# A whole answer up to this size is held until it is settled, so that it can carry its
# cost and the budget left after it; a larger one is streamed on without those headers.
WHOLE_ANSWER_BUFFER_BYTES = 4 * 1024 * 1024


async def send_upstream(
    request: web.Request, exchange: Exchange, method: str, payload: bytes
) -> aiohttp.ClientResponse:
    """Send the request on; the client's key stays here, the sidecar's credential goes."""
    settings = request.app[SETTINGS]
    url = f"{settings.upstream_base}/{exchange.endpoint}"
    if request.query_string:
        url = f"{url}?{request.query_string}"
    headers = upstream_request_headers(
        request.headers.items(), request.app[CREDENTIAL].value, settings.forward_headers
    )
    body = payload
    started = time.perf_counter()
    try:
        return await request.app[UPSTREAM].request(method, url, data=body, headers=headers)
    except TimeoutError as error:
        raise Refusal(
            504,
            f"The upstream {settings.upstream} did not answer in time.",
            "upstream_error",
            "upstream_timeout",
            outcome="upstream_error",
        ) from error
    except aiohttp.ClientError as error:
        raise Refusal(
            502,
            f"The upstream {settings.upstream} could not be reached: {error}",
            "upstream_error",
            "upstream_unreachable",
            outcome="upstream_error",
        ) from error
    finally:
        exchange.upstream_s += time.perf_counter() - started


async def relay_whole(
    upstream: aiohttp.ClientResponse, own_headers: dict[str, str], bill: Bill
) -> web.StreamResponse:
    """A whole (non-streamed) answer, error or not. Up to `WHOLE_ANSWER_BUFFER_BYTES` it
    is read, settled, and sent with its cost; a larger one is passed on as it arrives
    (memory stays bounded), its usage read from its tail, without those headers."""
    request, exchange = bill.request, bill.exchange
    exchange.status = upstream.status
    failed = upstream.status >= 400
    if failed:
        exchange.outcome = "upstream_error"
    credential = request.app[CREDENTIAL].value
    headers = client_response_headers(upstream.headers.items(), own_headers, credential)
    head, complete = await read_at_most(upstream, exchange, WHOLE_ANSWER_BUFFER_BYTES)
    if failed and not complete:
        raise too_large_upstream(upstream.status)
    if failed:
        # An upstream's error may quote the request, credential included.
        head = redact_bytes(head, credential)
    if complete:
        await bill.settle(None if failed else bill.reported_or_estimate(usage_in_body(head)))
        headers.update(bill.settled_headers())
        whole = web.Response(body=head, status=upstream.status, headers=headers)
        await whole.prepare(request)
        await whole.write_eof()
        return whole
    headers.pop(BUDGET_REMAINING_HEADER, None)
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    tail = UsageTail()
    chunk = head
    while chunk:
        tail.feed(chunk)
        if not await _write(response, chunk, exchange):
            await bill.settle(None if failed else bill.estimate)
            return response
        try:
            chunk = await _read_upstream(upstream, exchange)
        except (aiohttp.ClientError, TimeoutError) as error:
            return await _cut(bill, response, None, f"upstream cut it: {error}")
    await bill.settle(None if failed else bill.reported_or_estimate(tail.usage()))
    await response.write_eof()
    return response


def too_large_upstream(status: int) -> Refusal:
    """An upstream error (or model list) too large to hold and check: not passed on."""
    return Refusal(
        502,
        f"The upstream answered {status} with a body over {WHOLE_ANSWER_BUFFER_BYTES} bytes.",
        "upstream_error",
        "upstream_answer_too_large",
        outcome="upstream_error",
    )


async def _read_upstream(upstream: aiohttp.ClientResponse, exchange: Exchange) -> bytes:
    """The upstream's next bytes (empty at the end), its wait counted as upstream time."""
    started = time.perf_counter()
    try:
        return await upstream.content.readany()
    finally:
        exchange.upstream_s += time.perf_counter() - started


async def read_at_most(
    upstream: aiohttp.ClientResponse, exchange: Exchange, limit: int
) -> tuple[bytes, bool]:
    """The body if it ends within `limit` bytes (True), else what came so far (False).
    An upstream that cuts it short before anything was sent is a 502."""
    parts: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = await _read_upstream(upstream, exchange)
            if not chunk:
                return b"".join(parts), True
            parts.append(chunk)
            size += len(chunk)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise Refusal(
            502,
            f"The upstream cut its answer short: {error}",
            "upstream_error",
            "upstream_cut",
            outcome="upstream_cut",
        ) from error
    return b"".join(parts), False


async def relay_stream(
    upstream: aiohttp.ClientResponse, own_headers: dict[str, str], meter: StreamMeter, bill: Bill
) -> web.StreamResponse:
    """Pass events on as they arrive; settle what was streamed before the stream's end.
    A cut on either side ends the relay, not the accounting. A stream whose output passes
    what was reserved for it (the model's limit, when the request asked more or set none)
    is cut, so that it cannot spend past its reservation."""
    request, exchange = bill.request, bill.exchange
    tokens = bill.tokens
    response = web.StreamResponse(
        status=upstream.status,
        headers=client_response_headers(
            upstream.headers.items(), own_headers, request.app[CREDENTIAL].value
        ),
    )
    exchange.status = upstream.status
    await response.prepare(request)
    while True:
        try:
            chunk = await _read_upstream(upstream, exchange)
        except (aiohttp.ClientError, TimeoutError) as error:
            return await _cut(bill, response, meter, f"upstream cut it: {error}")
        if not chunk:
            break
        try:
            forward = meter.feed(chunk)
        except EventTooLongError as error:
            await _write(response, stream_error_event(str(error)), exchange)
            return await _cut(bill, response, meter, str(error))
        if forward and not await _write(response, forward, exchange):
            await bill.settle(bill.stream_usage(meter))
            return response
        if (
            tokens.capped_by_model
            and meter.completion_tokens_streamed > tokens.max_completion_tokens
        ):
            passed = f"passed the {tokens.max_completion_tokens} output tokens reserved for it"
            return await _cut(bill, response, meter, passed, outcome="reservation_exhausted")
    tail = meter.flush()
    if tail and not await _write(response, tail, exchange):
        await bill.settle(bill.stream_usage(meter))
        return response
    await bill.settle(bill.stream_usage(meter))
    await response.write_eof()
    return response


async def _cut(
    bill: Bill,
    response: web.StreamResponse,
    meter: StreamMeter | None,
    reason: str,
    *,
    outcome: str = "upstream_cut",
) -> web.StreamResponse:
    """End an answer already under way that cannot be completed: charge what was
    streamed (nothing of a whole answer), and cut the client off too, since a cleanly
    ended answer would pass a truncated one off as whole."""
    request, exchange = bill.request, bill.exchange
    exchange.outcome = outcome
    logger.warning("answer cut: %s", reason, extra={"request_id": exchange.request_id})
    await bill.settle(None if meter is None else bill.stream_usage(meter))
    if request.transport is not None:
        request.transport.abort()
    return response


async def _write(response: web.StreamResponse, data: bytes, exchange: Exchange) -> bool:
    """Write to the client; False when it has gone away."""
    try:
        await response.write(data)
    except ConnectionError:
        exchange.outcome = "client_disconnected"
        return False
    return True
