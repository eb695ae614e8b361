"""Prices from the maintained `genai-prices` library: the only module that imports it.

The library ships its price data inside the wheel; we only ever read that bundled
snapshot (never its update/download helpers), so pricing needs no network at run time
and a given install always charges the same.
"""

from __future__ import annotations

from decimal import Decimal

from genai_prices import Usage, calc_price

from llmquota.pricing.model_price import ModelPrice

__all__ = ["catalog_price"]

# Prices are probed with a small token count and scaled up. Probing with a full million
# would cross the long-context tiers some providers charge (e.g. above 200k tokens) and
# return the tier rate instead of the base rate that almost every request pays.
_PROBE_TOKENS = 1000
_PROBE_SCALE = Decimal(1_000_000 // _PROBE_TOKENS)


def catalog_price(model: str, provider_id: str | None) -> ModelPrice | None:
    """The library's base price for `model`, or None when it has no entry for it.

    With `provider_id` None the library guesses the provider from the model name.
    """
    try:
        input_calculation = calc_price(
            Usage(input_tokens=_PROBE_TOKENS), model_ref=model, provider_id=provider_id
        )
        input_price = input_calculation.total_price * _PROBE_SCALE
        output_price = _probe(model, provider_id, Usage(output_tokens=_PROBE_TOKENS))
        cached_price = _probe(
            model,
            provider_id,
            Usage(input_tokens=_PROBE_TOKENS, cache_read_tokens=_PROBE_TOKENS),
        )
    except LookupError:
        return None
    return ModelPrice(
        input_per_million=float(input_price),
        output_per_million=float(output_price),
        cached_input_per_million=float(cached_price),
        context_window=input_calculation.model.context_window or None,
    )


def _probe(model: str, provider_id: str | None, usage: Usage) -> Decimal:
    """USD per million tokens of the one kind of token that `usage` holds."""
    calculation = calc_price(usage, model_ref=model, provider_id=provider_id)
    total: Decimal = calculation.total_price
    return total * _PROBE_SCALE
