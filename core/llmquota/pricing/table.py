"""The price list a sidecar charges by: configured overrides first, then the library.

Lookups are cached because the same handful of model names is priced on every request,
and a library lookup walks its whole model list. The cache is bounded because model
names come from request bodies, which a client controls.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from llmquota.pricing.catalog import catalog_price
from llmquota.pricing.estimate import DEFAULT_CONTEXT_WINDOW
from llmquota.pricing.model_names import fallback_names
from llmquota.pricing.model_price import ModelPrice, UnknownModelError, UnknownModelPolicy

__all__ = ["PriceTable"]

_CACHED_MODELS = 4096


class PriceTable:
    """Prices models from `overrides`, then `genai-prices`, then `unknown_model`.

    `provider_id` is the `genai-prices` provider tried first (the upstream's, e.g.
    "openai"); a model it does not list is then looked up across all providers, so
    `claude-3-5-sonnet` behind an OpenAI-compatible gateway still finds its price.
    """

    def __init__(
        self,
        overrides: Mapping[str, ModelPrice],
        unknown_model: UnknownModelPolicy,
        provider_id: str | None = "openai",
    ) -> None:
        self.overrides: Mapping[str, ModelPrice] = dict(overrides)
        self.unknown_model = unknown_model
        self.provider_id = provider_id
        self._known_price = lru_cache(maxsize=_CACHED_MODELS)(self._find_price)

    def price_of(self, model: str) -> ModelPrice:
        """The price of `model`; raises `UnknownModelError` when unpriced and refused."""
        price = self._known_price(model)
        if price is not None:
            return price
        if self.unknown_model.default_price is None:
            raise UnknownModelError(model)
        return self.unknown_model.default_price

    def knows(self, model: str) -> bool:
        """Whether `model` has a price of its own (not the unknown-model default)."""
        return self._known_price(model) is not None

    def context_window(self, model: str) -> int:
        """The most tokens one request to `model` holds: its price entry's (an override's,
        then the library's), else `DEFAULT_CONTEXT_WINDOW`."""
        price = self._known_price(model) or self.unknown_model.default_price
        if price is None or price.context_window is None:
            return DEFAULT_CONTEXT_WINDOW
        return price.context_window

    def cost(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_prompt_tokens: int = 0,
    ) -> float:
        """USD for a request to `model` with this usage (see `ModelPrice.cost`)."""
        return self.price_of(model).cost(prompt_tokens, completion_tokens, cached_prompt_tokens)

    def _find_price(self, model: str) -> ModelPrice | None:
        """The exact name first, then its looser spellings, each via override then library."""
        for name in [model, *fallback_names(model)]:
            price = self._price_of_name(name)
            if price is not None:
                return price
        return None

    def _price_of_name(self, name: str) -> ModelPrice | None:
        if name in self.overrides:
            return self.overrides[name]
        price = catalog_price(name, self.provider_id)
        if price is None and self.provider_id is not None:
            price = catalog_price(name, None)
        return price
