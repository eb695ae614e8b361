"""When a budget is exhausted: the one rule, as admission applies it.

`admit.lua` refuses a request when a scope's settled spend plus what in-flight requests
have reserved has reached its maxBudget. Everything in Python that says whether a budget
is exhausted (the operator's BudgetExceeded condition, its forecast) asks this module, so
a status never says "within budget" while the sidecars refuse, nor the other way round.
A test runs both over the same counters and holds them equal.
"""

from __future__ import annotations

__all__ = ["budget_exhausted", "budget_left_nanos"]


def budget_exhausted(max_nanos: int | None, spend_nanos: int, reserved_nanos: int) -> bool:
    """Whether admission refuses this scope: spend + reserved >= max (None, <0: no max)."""
    if max_nanos is None or max_nanos < 0:
        return False
    return spend_nanos + reserved_nanos >= max_nanos


def budget_left_nanos(max_nanos: int | None, spend_nanos: int, reserved_nanos: int) -> int | None:
    """What admission still lets requests reserve (never below 0); None without a max."""
    if max_nanos is None or max_nanos < 0:
        return None
    return max(0, max_nanos - spend_nanos - reserved_nanos)
