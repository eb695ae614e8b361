"""What one model costs, and what to do about a model nobody priced.

Prices are USD per million tokens because that is how every provider publishes them,
so a number copied from a pricing page goes into configuration unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ModelPrice", "UnknownModelError", "UnknownModelPolicy"]

TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens for one model.

    `cached_input_per_million` is the rate for prompt tokens the provider served from its
    prompt cache; None means they cost the same as other input tokens. `context_window`
    is the most tokens (prompt and output) one request may hold, None when not known.
    """

    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None
    context_window: int | None = None

    def __post_init__(self) -> None:
        """Refuse prices that would make a budget meaningless (negative, NaN, infinite)."""
        rates = {
            "input_per_million": self.input_per_million,
            "output_per_million": self.output_per_million,
            "cached_input_per_million": self.cached_input_per_million,
        }
        for name, rate in rates.items():
            if rate is not None and not (math.isfinite(rate) and rate >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {rate!r}")
        if self.context_window is not None and self.context_window <= 0:
            raise ValueError(f"context_window must be > 0, got {self.context_window!r}")

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0
    ) -> float:
        """USD for a request; cached tokens are a part of `prompt_tokens`, as OpenAI reports them.

        Counts below zero are treated as zero so that a confused upstream can never turn a
        request into a refund.
        """
        prompt = max(prompt_tokens, 0)
        cached = min(max(cached_prompt_tokens, 0), prompt)
        cached_rate = (
            self.input_per_million
            if self.cached_input_per_million is None
            else self.cached_input_per_million
        )
        micro_usd = (
            (prompt - cached) * self.input_per_million
            + cached * cached_rate
            + max(completion_tokens, 0) * self.output_per_million
        )
        return micro_usd / TOKENS_PER_PRICE_UNIT


class UnknownModelError(LookupError):
    """No override and no price-library entry matched the model, and the policy is refuse."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"no price is known for model {model!r}; add it under `models:` in the pricing "
            "file or set `unknownModel` to a default price"
        )
        self.model = model


@dataclass(frozen=True, slots=True)
class UnknownModelPolicy:
    """What an unpriced model costs: refuse it (`default_price` None) or charge a default.

    There is deliberately no "free" option: a silent zero would let an unpriced model
    spend without limit, so charging nothing must be spelled out as a zero default price.
    """

    default_price: ModelPrice | None = None

    @classmethod
    def refuse(cls) -> UnknownModelPolicy:
        """Requests for an unpriced model are refused."""
        return cls(None)

    @classmethod
    def charge(cls, price: ModelPrice) -> UnknownModelPolicy:
        """Requests for an unpriced model are charged at `price`."""
        return cls(price)

    @property
    def refuses(self) -> bool:
        """True when unpriced models are refused rather than charged a default."""
        return self.default_price is None
