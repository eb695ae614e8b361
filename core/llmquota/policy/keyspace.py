"""Every Redis key name llmquota uses, built here and nowhere else.

Counters of one team share a hash tag (`{ns/team}`), so they would sit in one Redis
Cluster slot; a Dynamic RateLimit's pool, shared by keys of any team, has a tag of its own
(`{ns/ratelimit/name}`). A request's lease record and its tag's leases zset carry the tag
of the counters they name, so a script over them stays in one slot.
"""

from __future__ import annotations

__all__ = [
    "GENERATION",
    "LEASES_PATTERN",
    "POLICY_CHANNEL",
    "POLICY_INDEX",
    "budget_key",
    "budget_window_key",
    "created_key",
    "lease_key",
    "leases_key",
    "parallel_key",
    "policy_key",
    "pool_key",
    "rate_key",
    "workload_index_key",
    "workload_policies_change",
    "workload_policies_key",
]

PREFIX = "llmquota"
POLICY_CHANNEL = f"{PREFIX}:policy-changes"
"""Pub/sub channel: a key hash whose policy changed, or `*` for all."""
POLICY_INDEX = f"{PREFIX}:policies"
"""Set of the key hashes that have a policy."""
GENERATION = f"{PREFIX}:generation"
"""A random number written with the policies (standalone mode): a sidecar that finds it
gone or changed knows the store was wiped or replaced."""
LEASES_PATTERN = f"{PREFIX}:{{*}}:leases"
"""SCAN pattern that finds every hash tag's leases zset (the operator's sweep)."""


def policy_key(key_hash: str) -> str:
    """The resolved policy (JSON) of one ApiKey, by the SHA-256 of its key."""
    return f"{PREFIX}:policy:{key_hash}"


def created_key(subject: str) -> str:
    """When a standalone manifest's object was first loaded (ms), e.g. `Team default/qa`:
    its windows are cut from then, on every replica."""
    return f"{PREFIX}:created:{subject}"


def leases_key(tag: str) -> str:
    """The leases of requests in flight under one hash tag (sorted set: lease record key
    scored by expiry ms), beside the counters they hold, in the same Cluster slot."""
    return f"{PREFIX}:{{{tag}}}:leases"


def lease_key(tag: str, request_id: str) -> str:
    """What one in-flight request reserved under one hash tag (JSON: the counters it was
    admitted with, and per counter what it holds there)."""
    return f"{PREFIX}:{{{tag}}}:lease:{request_id}"


def budget_key(tag: str, scope_id: str) -> str:
    """A scope's spend in its current budget window (hash: win, spend, resv, s:/r:model)."""
    return f"{PREFIX}:{{{tag}}}:budget:{scope_id}"


def budget_window_key(tag: str, scope_id: str, window: str) -> str:
    """A scope's spend in one further window of its budget (`windows`), by the window's
    wire form (e.g. `cal:daily:Europe/Berlin`): the same fields as `budget_key`. The main
    window keeps `budget_key`, so its spend carries over when windows are added. The
    window comes before the scope id, whose end-user part is the caller's text."""
    return f"{PREFIX}:{{{tag}}}:budget-window:{window}:{scope_id}"


def rate_key(tag: str, scope_id: str) -> str:
    """A scope's requests and tokens this minute (hash: win, req, tok, q:/t:model)."""
    return f"{PREFIX}:{{{tag}}}:rate:{scope_id}"


def parallel_key(tag: str, scope_id: str) -> str:
    """A scope's requests in flight (hash: all, m:model)."""
    return f"{PREFIX}:{{{tag}}}:parallel:{scope_id}"


def pool_key(tag: str, scope_id: str) -> str:
    """A Dynamic pool's active keys and per-key use this minute (hash: a:/q:/t:keyhash)."""
    return f"{PREFIX}:{{{tag}}}:pool:{scope_id}"


def workload_policies_key(namespace: str) -> str:
    """The workload policies of one namespace (hash: Team name -> WorkloadPolicy JSON).

    One key per namespace, so that a sidecar reads only its own namespace's."""
    return f"{PREFIX}:workload-policies:{namespace}"


def workload_policies_change(namespace: str) -> str:
    """What POLICY_CHANNEL carries when a namespace's workload policies change; no key
    hash (64 hex digits) looks like it."""
    return f"workloads:{namespace}"


def workload_index_key(tag: str, team_scope_id: str) -> str:
    """The workload scope ids that have charged a team keylessly (set), for its status."""
    return f"{PREFIX}:{{{tag}}}:workloads:{team_scope_id}"
