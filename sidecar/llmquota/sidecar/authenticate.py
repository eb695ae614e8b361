"""Phase 1, authenticate: the presented virtual key → its resolved policy.

The key is hashed at once and only its hash is looked up (in the policy cache, the store
on a miss); the key itself goes no further.
"""

from __future__ import annotations

import logging

from aiohttp import web

from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.sidecar.exchange import Exchange, Refusal
from llmquota.sidecar.state import POLICIES, WORKLOADS
from llmquota.sidecar.wire import presented_key
from llmquota.store import StoreUnavailable

__all__ = ["authenticate", "store_unavailable"]

logger = logging.getLogger("llmquota.sidecar.requests")


async def authenticate(request: web.Request, exchange: Exchange) -> ResolvedPolicy:
    """The policy of the request's key, noted on `exchange`. Raises Refusal (401, 503).

    Without a known key, a Pod matched by a Team's workloadSelector gets its workload
    policy (`workload_identity`): the Pod's identity, never anything in the request.
    """
    key = presented_key(request.headers)
    try:
        key_policy = None if key is None else await request.app[POLICIES].get(hash_key(key))
        policy = await request.app[WORKLOADS].policy_for(key_policy)
    except StoreUnavailable as error:
        raise store_unavailable(error) from error
    if policy is None and key is None:
        raise Refusal(
            401,
            "You didn't provide an API key: send it as `Authorization: Bearer <key>`.",
            "authentication_error",
            "invalid_api_key",
            outcome="invalid_api_key",
        )
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


def store_unavailable(error: Exception) -> Refusal:
    """The 503 for a store that cannot be reached (logged)."""
    logger.error("quota store unreachable: %s", error)
    return Refusal(
        503,
        "The quota store is unreachable, so spend cannot be checked; retry shortly.",
        "service_unavailable",
        "service_unavailable",
        outcome="store_unavailable",
    )
