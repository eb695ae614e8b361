"""Reported token counts: a malformed one is a fault to charge from the estimate, not zero."""

from __future__ import annotations

import math

import pytest

from llmquota.pricing.reported_usage import MAX_REPORTED_TOKENS, reported_token_count


@pytest.mark.parametrize(
    ("value", "count"),
    [(None, 0), (0, 0), (12, 12), (12.0, 12), (MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS)],
)
def test_integers_in_range_are_believed(value: object, count: int) -> None:
    assert reported_token_count(value) == count


@pytest.mark.parametrize(
    "value",
    [-1, -0.5, 1.5, math.nan, math.inf, 1e308, MAX_REPORTED_TOKENS + 1, "12", True, [3], {}],
)
def test_anything_else_is_malformed(value: object) -> None:
    assert reported_token_count(value) is None
