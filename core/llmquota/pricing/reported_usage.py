"""Which token counts reported by an upstream are believed, decided before anything is charged.

A count that is negative, fractional, not finite, absurdly large (`1e308`) or not a number
at all is not usage but a fault, and charging it as zero would make the request free. Such
a report is refused here as a whole, and the request is charged from its estimate instead.
"""

from __future__ import annotations

__all__ = ["MAX_REPORTED_TOKENS", "reported_token_count"]

MAX_REPORTED_TOKENS = 10**12
"""More than any request can hold (a batch of 2048 prompts x 128 choices x 1M tokens is
2.6e11), and small enough that its cost in nano-USD stays an exact Redis integer."""


def reported_token_count(value: object) -> int | None:
    """A reported count: absent (None) is 0; a JSON integer in range is itself; else None."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_REPORTED_TOKENS:
        return value
    return None
