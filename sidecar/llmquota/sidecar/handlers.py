"""The route handlers: each the phases of one kind of request, in order.

POST (chat/completions, completions, embeddings, responses): read the body, admit
(authenticate, check, reserve), relay, settle. GET models: authenticate, check the key's
standing, relay the upstream's list narrowed to the key's models. Both run inside
`recording.recorded`, which answers their refusals and records them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from llmquota.policy.decision import check_key_standing
from llmquota.pricing.tokenizer import output_token_counter
from llmquota.sidecar.admit import admit
from llmquota.sidecar.authenticate import authenticate
from llmquota.sidecar.exchange import Exchange, Refusal
from llmquota.sidecar.relay import (
    WHOLE_ANSWER_BUFFER_BYTES,
    read_at_most,
    relay_stream,
    relay_whole,
    send_upstream,
    too_large_upstream,
)
from llmquota.sidecar.request_body import read_body
from llmquota.sidecar.settle import Bill, finish
from llmquota.sidecar.state import CREDENTIAL
from llmquota.sidecar.streaming import StreamMeter
from llmquota.sidecar.wire import (
    client_response_headers,
    narrow_model_list,
    redact_bytes,
    stream_asks_usage,
    with_stream_usage_raw,
)

__all__ = ["MAX_EVENT_BYTES", "STREAM_USAGE_ENDPOINTS", "list_models", "proxy_post"]

# Endpoints whose streams report usage only when asked (`stream_options.include_usage`);
# Responses streams always end with it.
STREAM_USAGE_ENDPOINTS = frozenset({"chat/completions", "completions"})
# One server-sent event longer than this (no blank line in sight) ends the stream with
# an error event instead of being buffered.
MAX_EVENT_BYTES = 1024 * 1024


async def proxy_post(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    """POST chat/completions, completions, embeddings, responses."""
    parsed = await read_body(request)
    exchange.model = parsed.model
    tokens, admitted = await admit(request, exchange, parsed)
    own_headers = {} if admitted is None else dict(admitted.headers)
    own_headers["x-request-id"] = exchange.request_id
    hide_usage = (
        parsed.stream
        and exchange.endpoint in STREAM_USAGE_ENDPOINTS
        and not stream_asks_usage(parsed.body)
    )
    payload = with_stream_usage_raw(parsed) if hide_usage else parsed.raw
    bill = Bill(request, exchange, parsed.model, tokens, admitted)
    meter: StreamMeter | None = None
    try:
        upstream = await send_upstream(request, exchange, "POST", payload)
        async with upstream:
            if upstream.status >= 400 or not parsed.stream:
                return await relay_whole(upstream, own_headers, bill)
            meter = StreamMeter(
                hide_usage_chunk=hide_usage,
                tokens=output_token_counter(parsed.model),
                max_event_bytes=MAX_EVENT_BYTES,
            )
            return await relay_stream(upstream, own_headers, meter, bill)
    except BaseException:
        # Cut off (client gone, shutdown, upstream unreachable): charge what was
        # streamed, or nothing when nothing was.
        streamed = meter is not None and (meter.text_chars > 0 or meter.usage is not None)
        finish(
            request,
            exchange,
            parsed.model,
            bill.stream_usage(meter) if meter is not None and streamed else None,
        )
        raise


async def list_models(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    """GET models: the upstream's list, narrowed to the models the key may use."""
    policy = await authenticate(request, exchange)
    refused = check_key_standing(policy, datetime.now(UTC))
    if refused is not None:
        raise Refusal.of(refused)
    upstream = await send_upstream(request, exchange, "GET", b"")
    credential = request.app[CREDENTIAL].value
    async with upstream:
        raw, complete = await read_at_most(upstream, exchange, WHOLE_ANSWER_BUFFER_BYTES)
        headers = client_response_headers(upstream.headers.items(), {}, credential)
    if not complete:
        raise too_large_upstream(upstream.status)
    if upstream.status >= 400:
        raw = redact_bytes(raw, credential)
    if upstream.status == 200 and policy.models:
        narrowed = narrow_model_list(raw, policy.models)
        if narrowed is None:
            raise Refusal(
                502,
                "The upstream's model list is not one: no `data` list of models with ids.",
                "upstream_error",
                "upstream_malformed",
                outcome="upstream_error",
            )
        raw = narrowed
    exchange.status = upstream.status
    headers["x-request-id"] = exchange.request_id
    return web.Response(body=raw, status=upstream.status, headers=headers)
