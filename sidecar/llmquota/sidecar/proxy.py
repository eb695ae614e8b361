"""The request handlers: authenticate, admit, forward, settle.

One request costs the store one round trip to admit (after the first sight of a key,
whose policy is then cached) and one to settle; everything else is in memory. Every
path out of a handler either settles a reservation (charging what was served) or aborts
it (charging nothing), so a budget never keeps money reserved for a request that ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import (
    BUDGET_REMAINING_HEADER,
    Admitted,
    Refused,
    check_key,
    check_key_standing,
    format_usd,
    interpret_admit,
)
from llmquota.policy.failure import fails_open
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.pricing import TokenEstimate, UnknownModelError, estimate_request
from llmquota.pricing.tokenizer import output_token_counter
from llmquota.sidecar.metrics import ModelLabels
from llmquota.sidecar.state import (
    BUDGET_GAUGES,
    CREDENTIAL,
    IN_FLIGHT,
    METRICS,
    POLICIES,
    PRICES,
    SETTINGS,
    STORE,
    UPSTREAM,
)
from llmquota.sidecar.streaming import EventTooLongError, StreamMeter, stream_error_event
from llmquota.sidecar.wire import (
    BodyTooLargeError,
    InvalidBodyError,
    ParsedBody,
    Usage,
    UsageTail,
    client_response_headers,
    decode_body,
    error_body,
    narrow_model_list,
    parse_body,
    presented_key,
    redact_bytes,
    stream_asks_usage,
    upstream_request_headers,
    usage_in_body,
    with_stream_usage,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "RESPONSE_COST_HEADER",
    "SETTLE_WAIT_S",
    "STREAM_USAGE_ENDPOINTS",
    "WHOLE_ANSWER_BUFFER_BYTES",
    "list_models",
    "proxy_post",
]

logger = logging.getLogger("llmquota.sidecar.requests")

# Endpoints whose streams report usage only when asked (`stream_options.include_usage`);
# Responses streams always end with it.
STREAM_USAGE_ENDPOINTS = frozenset({"chat/completions", "completions"})
_JSON = "application/json"
RESPONSE_COST_HEADER = "x-llmquota-response-cost"
# A whole answer up to this size is held until it is settled, so that it can carry its
# cost and the budget left after it; a larger one is streamed on without those headers.
WHOLE_ANSWER_BUFFER_BYTES = 4 * 1024 * 1024
# One server-sent event longer than this (no blank line in sight) ends the stream with
# an error event instead of being buffered.
MAX_EVENT_BYTES = 1024 * 1024
# How long an answer waits for its settle to land before it ends: the client's next
# request then sees it settled. A store that is down delays no answer by more.
SETTLE_WAIT_S = 2.0
_STORE_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(slots=True)
class Exchange:
    """One request's journey, for its metrics and its log line."""

    request_id: str
    endpoint: str
    started: float
    upstream_s: float = 0.0
    policy: ResolvedPolicy | None = None
    model: str = ""
    outcome: str = "served"
    status: int = 200
    reserved: bool = False  # the store holds a reservation for this request
    usage: Usage | None = None
    cost_usd: float = 0.0

    def subject(self, model_labels: ModelLabels) -> tuple[str, str, str, str]:
        """namespace, team, key name, model: the labels of per-subject metrics."""
        policy = self.policy
        if policy is None:
            return "", "", "", model_labels.label(self.model, ())
        model = model_labels.label(self.model, policy.models)
        return policy.namespace, policy.team or "", policy.key_name, model


class Refusal(Exception):  # noqa: N818 - a control-flow signal, not an error of the sidecar
    """Stop handling and answer with this status and OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None,
        *,
        outcome: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, error_type, code, param)
        self.outcome = outcome
        self.headers = headers or {}
        # The body was left unread: the connection cannot carry another request.
        self.close_connection = close_connection

    @classmethod
    def of(cls, refused: Refused) -> Refusal:
        """The policy layer's refusal as a response."""
        return cls(
            refused.status,
            refused.message,
            refused.error_type,
            refused.code,
            outcome=refused.code,
            headers=refused.headers,
        )


def _endpoint(request: web.Request) -> str:
    return request.path.strip("/").removeprefix("v1/")


def _new_exchange(request: web.Request) -> Exchange:
    return Exchange(uuid.uuid4().hex, _endpoint(request), time.perf_counter())


async def proxy_post(request: web.Request) -> web.StreamResponse:
    """POST chat/completions, completions, embeddings, responses."""
    exchange = _new_exchange(request)
    try:
        return await _forward_post(request, exchange)
    except Refusal as refusal:
        response = _refusal_response(exchange, refusal)
        if refusal.close_connection:
            await _answer_and_close(request, response)
        return response
    finally:
        _record(request, exchange)


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Send `response`, then close the connection at once: aiohttp would otherwise
    linger to drain the unread body (up to 10 s of a body that may never come)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


async def list_models(request: web.Request) -> web.StreamResponse:
    """GET models: the upstream's list, narrowed to the models the key may use."""
    exchange = _new_exchange(request)
    try:
        policy = await _authenticate(request, exchange)
        refused = check_key_standing(policy, datetime.now(UTC))
        if refused is not None:
            raise Refusal.of(refused)
        upstream = await _send_upstream(request, exchange, "GET", b"")
        credential = request.app[CREDENTIAL].value
        async with upstream:
            raw, complete = await _read_at_most(upstream, exchange, WHOLE_ANSWER_BUFFER_BYTES)
            headers = client_response_headers(upstream.headers.items(), {}, credential)
        if not complete:
            raise _too_large_upstream(upstream.status)
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
    except Refusal as refusal:
        return _refusal_response(exchange, refusal)
    finally:
        _record(request, exchange)


async def _authenticate(request: web.Request, exchange: Exchange) -> ResolvedPolicy:
    key = presented_key(request.headers)
    if key is None:
        raise Refusal(
            401,
            "You didn't provide an API key: send it as `Authorization: Bearer <key>`.",
            "authentication_error",
            "invalid_api_key",
            outcome="invalid_api_key",
        )
    cache = request.app[POLICIES]
    key_hash = hash_key(key)
    try:
        policy = await cache.get(key_hash)
    except _STORE_DOWN as error:
        raise _store_unavailable(error) from error
    if policy is None:
        raise Refusal(
            401,
            "Incorrect API key provided: no ApiKey has this key.",
            "authentication_error",
            "invalid_api_key",
            outcome="invalid_api_key",
        )
    exchange.policy = policy
    return policy


def _store_unavailable(error: Exception) -> Refusal:
    logger.error("quota store unreachable: %s", error)
    return Refusal(
        503,
        "The quota store is unreachable, so spend cannot be checked; retry shortly.",
        "service_unavailable",
        "service_unavailable",
        outcome="store_unavailable",
    )


async def _read_body(request: web.Request) -> ParsedBody:
    """The parsed body; a declared or actual size over the limit, or a body slower than
    `--body-timeout`, is refused (the former before a byte of it is read)."""
    settings = request.app[SETTINGS]
    declared = request.content_length
    if declared is not None and declared > settings.max_body_bytes:
        raise _too_large(settings.max_body_bytes)
    try:
        if request.content.is_eof():  # the usual case: it came with the headers
            raw = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise _too_large(settings.max_body_bytes) from error
    except (web.RequestPayloadError, BadHttpMessage) as error:
        # e.g. a body that does not decode as its Content-Encoding says
        raise Refusal(
            400,
            f"The request body could not be read: {error}",
            "invalid_request_error",
            None,
            outcome="invalid_request",
            close_connection=True,
        ) from error
    except TimeoutError as error:
        raise Refusal(
            408,
            f"The request body did not arrive within {settings.body_timeout:g} seconds "
            "(--body-timeout).",
            "invalid_request_error",
            "request_timeout",
            outcome="invalid_request",
            close_connection=True,
        ) from error
    try:
        decoded = decode_body(
            raw, request.headers.get("Content-Encoding", ""), settings.max_body_bytes
        )
        return parse_body(decoded)
    except BodyTooLargeError as error:
        raise _too_large(settings.max_body_bytes) from error
    except InvalidBodyError as error:
        raise Refusal(
            error.status,
            str(error),
            "invalid_request_error",
            error.code,
            outcome="invalid_request",
            param=error.param,
        ) from error


def _too_large(limit: int) -> Refusal:
    return Refusal(
        413,
        f"The request body is larger than the sidecar's limit of {limit} bytes (--max-body-bytes).",
        "invalid_request_error",
        "request_too_large",
        outcome="invalid_request",
        close_connection=True,
    )


def _estimate(
    request: web.Request, exchange: Exchange, parsed: ParsedBody
) -> tuple[TokenEstimate, int]:
    """Tokens the request may use and the cost to reserve, in nano-USD."""
    prices = request.app[PRICES]
    try:
        tokens = estimate_request(
            exchange.endpoint, parsed.body, context_window=prices.context_window(parsed.model)
        )
    except (TypeError, ValueError, RecursionError) as error:
        # The body is the client's, unchecked beyond `model`: a field of a type no API
        # accepts (a list as a content part's `type`) is its error, not the sidecar's.
        raise Refusal(
            400,
            f"The request body has a field of the wrong type or shape: {error}",
            "invalid_request_error",
            None,
            outcome="invalid_request",
        ) from error
    try:
        cost = prices.cost(parsed.model, tokens.prompt_tokens, tokens.max_completion_tokens)
    except UnknownModelError as error:
        pricing = request.app[SETTINGS].pricing
        where = f"the --pricing file {pricing}" if pricing else "a --pricing file"
        raise Refusal(
            400,
            f"Model {parsed.model!r} has no known price, so its spend cannot be counted: "
            f"add it under `models:` in {where}, or set `unknownModel` there.",
            "invalid_request_error",
            "model_not_priced",
            outcome="model_not_priced",
            param="model",
        ) from error
    return tokens, nanos(cost)


async def _admit(
    request: web.Request, exchange: Exchange, parsed: ParsedBody
) -> tuple[TokenEstimate, Admitted | None]:
    """Check and reserve: the estimate and the store's decision (None: admitted
    uncounted, --fail-open). Raises Refusal."""
    policy = await _authenticate(request, exchange)
    refused = check_key(policy, parsed.model, datetime.now(UTC))
    if refused is not None:
        raise Refusal.of(refused)
    tokens, cost_nanos = _estimate(request, exchange, parsed)
    settings = request.app[SETTINGS]
    call = admission_call(
        policy,
        RequestEstimate(
            parsed.model,
            cost_nanos,
            tokens.total,
            parsed.end_user,
        ),
        exchange.request_id,
        settings.lease_ms,
    )
    try:
        raw = await request.app[STORE].admit(call)
    except ResponseError as error:
        # The store ran the script and refused its arguments: nothing was reserved.
        logger.warning(
            "quota store refused the admission: %s",
            error,
            extra={"request_id": exchange.request_id, "reserve_nanos": cost_nanos},
        )
        raise Refusal(
            503,
            "The quota store could not count this request; retry, or ask for less "
            "(a smaller max_tokens or n).",
            "service_unavailable",
            "store_refused",
            outcome="store_unavailable",
        ) from error
    except _STORE_DOWN as error:
        if not fails_open(call.scopes, fail_open_flag=settings.fail_open):
            raise _store_unavailable(error) from error
        logger.warning(
            "quota store unreachable, admitting without counting (failurePolicy Open on "
            "every limit, or --fail-open): %s",
            error,
            extra={"request_id": exchange.request_id},
        )
        exchange.outcome = "fail_open"
        return tokens, None
    request.app[BUDGET_GAUGES].watch(call.scopes)
    decision = interpret_admit(raw, call)
    if isinstance(decision, Refused):
        _note_refusal(request, policy, decision)
        raise Refusal.of(decision)
    exchange.reserved = True
    request.app[IN_FLIGHT].add(exchange.request_id)
    return tokens, decision


def _note_refusal(request: web.Request, policy: ResolvedPolicy, refused: Refused) -> None:
    if refused.status == 429:
        request.app[METRICS].rate_limited.labels(
            policy.namespace, policy.team or "", policy.key_name, refused.limit
        ).inc()


@dataclass(slots=True)
class _Bill:
    """What an admitted request will be charged, settled before its answer ends, so
    that the client's next request sees it settled (and a whole answer can carry its
    cost and the remaining budget after it)."""

    request: web.Request
    exchange: Exchange
    model: str
    tokens: TokenEstimate
    admitted: Admitted | None  # None: admitted uncounted (--fail-open)
    settled: bool = False

    @property
    def estimate(self) -> Usage:
        """What the request was admitted for: charged when the upstream reports nothing."""
        return Usage(self.tokens.prompt_tokens, self.tokens.max_completion_tokens)

    def stream_usage(self, meter: StreamMeter) -> Usage:
        """The usage to charge for what a stream delivered."""
        return _stream_usage(meter, self.tokens)

    def reported_or_estimate(self, usage: Usage | None) -> Usage:
        """The upstream's usage; the estimate (logged) when it reported none."""
        if usage is not None:
            return usage
        logger.warning(
            "upstream reported no usage; charging the estimate",
            extra={"request_id": self.exchange.request_id, "model": self.model},
        )
        return self.estimate

    async def settle(self, usage: Usage | None) -> None:
        """Charge `usage` (None: free the reservation); wait a little for the store."""
        task = _finish(self.request, self.exchange, self.model, usage)
        if task is None:
            return
        self.settled = True
        # A store that is down must not hold the answer: the settle is retried anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), SETTLE_WAIT_S)

    def settled_headers(self) -> dict[str, str]:
        """The cost of this request and the budget left after it, once settled."""
        if not self.settled or self.admitted is None:
            return {}
        cost_nanos = nanos(self.exchange.cost_usd)
        headers = {RESPONSE_COST_HEADER: format_usd(cost_nanos)}
        remaining = self.admitted.remaining_after(cost_nanos)
        if remaining is not None:
            headers[BUDGET_REMAINING_HEADER] = format_usd(remaining)
        return headers


async def _forward_post(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    parsed = await _read_body(request)
    exchange.model = parsed.model
    tokens, admitted = await _admit(request, exchange, parsed)
    own_headers = {} if admitted is None else dict(admitted.headers)
    own_headers["x-request-id"] = exchange.request_id
    hide_usage = (
        parsed.stream
        and exchange.endpoint in STREAM_USAGE_ENDPOINTS
        and not stream_asks_usage(parsed.body)
    )
    payload = json.dumps(with_stream_usage(parsed.body)).encode() if hide_usage else parsed.raw
    bill = _Bill(request, exchange, parsed.model, tokens, admitted)
    meter: StreamMeter | None = None
    try:
        upstream = await _send_upstream(request, exchange, "POST", payload)
        async with upstream:
            if upstream.status >= 400 or not parsed.stream:
                return await _relay_whole(upstream, own_headers, bill)
            meter = StreamMeter(
                hide_usage_chunk=hide_usage,
                tokens=output_token_counter(parsed.model),
                max_event_bytes=MAX_EVENT_BYTES,
            )
            return await _relay_stream(upstream, own_headers, meter, bill)
    except BaseException:
        # Cut off (client gone, shutdown, upstream unreachable): charge what was
        # streamed, or nothing when nothing was.
        streamed = meter is not None and (meter.text_chars > 0 or meter.usage is not None)
        _finish(
            request,
            exchange,
            parsed.model,
            bill.stream_usage(meter) if meter is not None and streamed else None,
        )
        raise


def _stream_usage(meter: StreamMeter | None, tokens: TokenEstimate) -> Usage:
    """The stream's reported usage, or the prompt estimate plus the text streamed.

    The output reserved is a bound the stream cannot pass (the upstream stops at the
    request's cap, the sidecar at the model's), so an estimate from text (an upper bound
    itself) is held to it: a cut stream never costs more than was reserved for it.
    """
    if meter is not None and meter.usage is not None:
        return meter.usage
    streamed = 0 if meter is None else meter.completion_tokens_streamed
    return Usage(tokens.prompt_tokens, min(streamed, tokens.max_completion_tokens))


async def _send_upstream(
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


async def _relay_whole(
    upstream: aiohttp.ClientResponse, own_headers: dict[str, str], bill: _Bill
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
    head, complete = await _read_at_most(upstream, exchange, WHOLE_ANSWER_BUFFER_BYTES)
    if failed and not complete:
        raise _too_large_upstream(upstream.status)
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


def _too_large_upstream(status: int) -> Refusal:
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


async def _read_at_most(
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


async def _relay_stream(
    upstream: aiohttp.ClientResponse, own_headers: dict[str, str], meter: StreamMeter, bill: _Bill
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
    bill: _Bill,
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


def _finish(
    request: web.Request, exchange: Exchange, model: str, usage: Usage | None
) -> asyncio.Task[None] | None:
    """Settle what was served (usage) or free the reservation (None), in the background;
    the task, or None when nothing was reserved."""
    if not exchange.reserved:
        return None
    exchange.reserved = False
    charge = None
    if usage is not None:
        cost = request.app[PRICES].cost(
            model, usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens
        )
        exchange.usage, exchange.cost_usd = usage, cost
        charge = (nanos(cost), usage.total)
    request.app[BUDGET_GAUGES].touch()
    return request.app[IN_FLIGHT].finish(exchange.request_id, charge)


def _refusal_response(exchange: Exchange, refusal: Refusal) -> web.Response:
    exchange.outcome = refusal.outcome
    exchange.status = refusal.status
    return web.Response(
        body=refusal.body,
        status=refusal.status,
        content_type=_JSON,
        headers={**refusal.headers, "x-request-id": exchange.request_id},
    )


def _record(request: web.Request, exchange: Exchange) -> None:
    """Count the request in the metrics and log it, once, whatever the outcome."""
    metrics = request.app[METRICS]
    labels = exchange.subject(metrics.model_labels)
    metrics.requests.labels(*labels, exchange.outcome).inc()
    elapsed = time.perf_counter() - exchange.started
    metrics.overhead.observe(max(elapsed - exchange.upstream_s, 0.0))
    if exchange.usage is not None:
        metrics.spend.labels(*labels).inc(exchange.cost_usd)
        metrics.tokens.labels(*labels, "input").inc(exchange.usage.prompt_tokens)
        metrics.tokens.labels(*labels, "output").inc(exchange.usage.completion_tokens)
    if logger.isEnabledFor(logging.INFO):
        namespace, team, key, _ = labels
        logger.info(
            "request",
            extra={
                "request_id": exchange.request_id,
                "method": request.method,
                "path": request.path,
                "status": exchange.status,
                "outcome": exchange.outcome,
                "namespace": namespace,
                "team": team,
                "key": key,
                "model": exchange.model,
                "cost_usd": exchange.cost_usd,
                "prompt_tokens": exchange.usage.prompt_tokens if exchange.usage else 0,
                "completion_tokens": exchange.usage.completion_tokens if exchange.usage else 0,
                "duration_ms": round(elapsed * 1000, 3),
                "upstream_ms": round(exchange.upstream_s * 1000, 3),
            },
        )
