"""Phase 2, admit: check the key, estimate the request, and reserve its worst case.

One store round trip (`admit.lua`) checks every scope and reserves in all of them, or
refuses with the first exhausted one; the refusal becomes the policy layer's answer.
A store that is down refuses (503) unless every limit fails open.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web

from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import Admitted, Audited, Refused, check_key, interpret_admit
from llmquota.policy.failure import fails_open
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.pricing import TokenEstimate, UnknownModelError, estimate_request
from llmquota.sidecar.authenticate import authenticate, store_unavailable
from llmquota.sidecar.budget_gauges import subject_labels
from llmquota.sidecar.exchange import Exchange, Refusal
from llmquota.sidecar.state import BUDGET_GAUGES, IN_FLIGHT, METRICS, PRICES, SETTINGS, STORE
from llmquota.sidecar.wire import ParsedBody
from llmquota.store import StoreRefused, StoreUnavailable

__all__ = ["admit"]

logger = logging.getLogger("llmquota.sidecar.requests")


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


async def admit(
    request: web.Request, exchange: Exchange, parsed: ParsedBody
) -> tuple[TokenEstimate, Admitted | None]:
    """Check and reserve: the estimate and the store's decision (None: admitted
    uncounted, --fail-open). Raises Refusal."""
    policy = await authenticate(request, exchange)
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
    except StoreRefused as error:
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
    except StoreUnavailable as error:
        if not fails_open(call.scopes, fail_open_flag=settings.fail_open):
            raise store_unavailable(error) from error
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
    if decision.audit is not None:
        _note_audit(request, exchange, decision.audit)
    return tokens, decision


def _note_audit(request: web.Request, exchange: Exchange, audit: Audited) -> None:
    """A request an audited scope would have refused: served, counted and logged (its
    response carries `x-llmquota-audit`, in the decision's headers)."""
    request.app[METRICS].audit_refusals.labels(*subject_labels(audit.scope)).inc()
    logger.info(
        "audited limit would refuse",
        extra={
            "request_id": exchange.request_id,
            "scope": audit.scope.label,
            "limit": audit.refusal.limit,
            "reason": audit.refusal.message,
        },
    )


def _note_refusal(request: web.Request, policy: ResolvedPolicy, refused: Refused) -> None:
    if refused.status == 429:
        request.app[METRICS].rate_limited.labels(
            policy.namespace, policy.team or "", policy.key_name, refused.limit
        ).inc()
