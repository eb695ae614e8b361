"""What a request may do while the store is unreachable: the failurePolicy rule.

Money fails closed, rate limits fail open (the defaults of Budget and RateLimit), and a
request is let through uncounted only when every limit that applies to it says Open:
one Closed budget among the scopes keeps it out. A budget that only counts (a subject
without `budget`) guards no money, so it never keeps a request out. The sidecar's
`--fail-open` overrides all of it. Decided from the cached policy alone, so it holds for
the whole outage.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmquota.policy.limits import Scope

__all__ = ["closed_scope", "fails_open"]


def closed_scope(scopes: Iterable[Scope]) -> Scope | None:
    """The first scope whose failurePolicy is Closed, None when all are Open."""
    for scope in scopes:
        budget, rate = scope.budget, scope.rate
        if budget is not None and budget.max_nanos >= 0 and not budget.fail_open:
            return scope
        if rate is not None and not rate.fail_open:
            return scope
    return None


def fails_open(scopes: Iterable[Scope], *, fail_open_flag: bool) -> bool:
    """Whether a request with these scopes is admitted uncounted while the store is away."""
    return fail_open_flag or closed_scope(scopes) is None
