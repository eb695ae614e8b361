"""Phase 4, settle: swap an admitted request's reservation for what it really cost.

Every path out of an admitted request either settles (charging what was served) or
aborts (charging nothing), so a budget never keeps money reserved for a request that
ended. The settle itself runs in the background (`leases.InFlight`, retried until the
store takes it); an answer waits for it a little, so that the client's next request
sees this one settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import web

from llmquota.policy.decision import BUDGET_REMAINING_HEADER, Admitted, format_usd
from llmquota.policy.limits import nanos
from llmquota.pricing import TokenEstimate
from llmquota.sidecar.exchange import Exchange
from llmquota.sidecar.state import BUDGET_GAUGES, IN_FLIGHT, PRICES
from llmquota.sidecar.streaming import StreamMeter
from llmquota.sidecar.wire import Usage

__all__ = ["RESPONSE_COST_HEADER", "SETTLE_WAIT_S", "Bill", "finish"]

logger = logging.getLogger("llmquota.sidecar.requests")

RESPONSE_COST_HEADER = "x-llmquota-response-cost"
# How long an answer waits for its settle to land before it ends: the client's next
# request then sees it settled. A store that is down delays no answer by more.
SETTLE_WAIT_S = 2.0


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


@dataclass(slots=True)
class Bill:
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
        task = finish(self.request, self.exchange, self.model, usage)
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


def finish(
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
