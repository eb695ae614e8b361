"""The middleware around every proxied request: refusal → response, and its record.

A phase that refuses raises `Refusal`; here it becomes the OpenAI error envelope. Every
request, served or refused, is then counted in the metrics and logged, once.

It wraps each proxy route's handler when the route is added, rather than being an
aiohttp `@web.middleware`: that would run for the probes and `/metrics` too, and cost
every request aiohttp's middleware chain (a cache lookup and a current-app middleware
of its own, one more coroutine) on the hot path.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from llmquota.sidecar.exchange import Exchange, Refusal
from llmquota.sidecar.logs import LineLogger
from llmquota.sidecar.state import METRICS

__all__ = ["ExchangeHandler", "recorded"]

request_log = LineLogger(logging.getLogger("llmquota.sidecar.requests"))

_JSON = "application/json"

ExchangeHandler = Callable[[web.Request, Exchange], Awaitable[web.StreamResponse]]


class _RequestIds:
    """Request ids, unique across processes (they name reservations in the shared store):
    16 random hex digits drawn once per process, then a counter. uuid4 per request cost
    a getrandom system call each; a forked worker (`--workers`) draws its own prefix."""

    def __init__(self) -> None:
        self._prefix = ""
        self._counter = itertools.count()
        self.restart()
        os.register_at_fork(after_in_child=self.restart)

    def restart(self) -> None:
        """A new prefix, the counter from 0."""
        self._prefix, self._counter = uuid.uuid4().hex[:16], itertools.count()

    def next(self) -> str:
        """The next id: 32 hex digits, as uuid4's."""
        return f"{self._prefix}{next(self._counter):016x}"


_REQUEST_IDS = _RequestIds()


def recorded(handler: ExchangeHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`handler` as an aiohttp handler: given the request's `Exchange`, its refusals
    answered, the request recorded."""

    async def handle(request: web.Request) -> web.StreamResponse:
        exchange = Exchange(_REQUEST_IDS.next(), _endpoint(request), time.perf_counter())
        try:
            return await handler(request, exchange)
        except Refusal as refusal:
            response = _refusal_response(exchange, refusal)
            if refusal.close_connection:
                await _answer_and_close(request, response)
            return response
        finally:
            _record(request, exchange)

    return handle


def _endpoint(request: web.Request) -> str:
    return request.path.strip("/").removeprefix("v1/")


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Send `response`, then close the connection at once: aiohttp would otherwise
    linger to drain the unread body (up to 10 s of a body that may never come)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


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
    subject = (*labels, metrics.workload)
    metrics.requests.inc((*subject, exchange.outcome))
    elapsed = time.perf_counter() - exchange.started
    metrics.overhead.observe(max(elapsed - exchange.upstream_s, 0.0))
    if exchange.usage is not None:
        metrics.spend.inc(subject, exchange.cost_usd)
        metrics.tokens.inc((*subject, "input"), exchange.usage.prompt_tokens)
        metrics.tokens.inc((*subject, "output"), exchange.usage.completion_tokens)
    if request_log.enabled():
        namespace, team, key, _ = labels
        request_log.info(
            "request",
            {
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
