"""PriceTable: overrides win, the library fills in, unknown models follow the policy."""

from __future__ import annotations

import math

import pytest

from llmquota.pricing import ModelPrice, PriceTable, UnknownModelError, UnknownModelPolicy
from llmquota.pricing.estimate import DEFAULT_CONTEXT_WINDOW
from llmquota.pricing.model_names import fallback_names

GPT_4O_MINI = ModelPrice(
    input_per_million=0.15,
    output_per_million=0.6,
    cached_input_per_million=0.075,
    context_window=128_000,
)


def library_only() -> PriceTable:
    return PriceTable({}, UnknownModelPolicy.refuse())


def test_library_prices_a_known_model() -> None:
    assert library_only().price_of("gpt-4o-mini") == GPT_4O_MINI


def test_cost_is_usd_for_the_usage() -> None:
    cost = library_only().cost("gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)
    assert cost == pytest.approx(1000 * 0.15e-6 + 500 * 0.6e-6)


def test_cached_prompt_tokens_are_charged_at_the_cached_rate() -> None:
    cost = library_only().cost("gpt-4o-mini", 1000, 0, cached_prompt_tokens=400)
    assert cost == pytest.approx(600 * 0.15e-6 + 400 * 0.075e-6)


def test_override_wins_over_the_library() -> None:
    cheap = ModelPrice(input_per_million=1, output_per_million=2)
    table = PriceTable({"gpt-4o-mini": cheap}, UnknownModelPolicy.refuse())
    assert table.price_of("gpt-4o-mini") == cheap
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)


def test_unknown_model_is_refused_never_free() -> None:
    with pytest.raises(UnknownModelError, match="my-llama") as raised:
        library_only().cost("my-llama", 10, 10)
    assert raised.value.model == "my-llama"


def test_unknown_model_is_charged_the_default_price() -> None:
    default = ModelPrice(input_per_million=1, output_per_million=2)
    table = PriceTable({}, UnknownModelPolicy.charge(default))
    assert table.price_of("my-llama") == default
    assert not UnknownModelPolicy.charge(default).refuses
    assert UnknownModelPolicy.refuse().refuses


@pytest.mark.parametrize(
    "model", ["openai/gpt-4o-mini", "gpt-4o-mini-2099-01-01", "azure/gpt-4o-mini-20990101"]
)
def test_prefixes_and_dates_fall_back_to_the_base_model(model: str) -> None:
    assert library_only().price_of(model) == GPT_4O_MINI


def test_override_applies_to_a_prefixed_name() -> None:
    mine = ModelPrice(input_per_million=0.2, output_per_million=0.4)
    table = PriceTable({"my-llama": mine}, UnknownModelPolicy.refuse())
    assert table.price_of("vllm/my-llama") == mine


def test_other_providers_are_tried_when_the_first_does_not_list_the_model() -> None:
    price = library_only().price_of("claude-3-5-sonnet")
    assert (price.input_per_million, price.output_per_million) == (3.0, 15.0)


def test_without_a_provider_the_library_guesses() -> None:
    table = PriceTable({}, UnknownModelPolicy.refuse(), provider_id=None)
    assert table.price_of("gpt-4o-mini") == GPT_4O_MINI


def test_lookups_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    table = library_only()
    table.price_of("gpt-4o-mini")
    monkeypatch.setattr("llmquota.pricing.table.catalog_price", _fail)
    assert table.price_of("gpt-4o-mini") == GPT_4O_MINI


def _fail(*_: object) -> None:
    raise AssertionError("catalog consulted again")


def test_dated_name_the_library_knows_is_not_stripped() -> None:
    assert fallback_names("gpt-4o-mini") == []
    assert fallback_names("openai/gpt-4o-2024-08-06") == [
        "gpt-4o-2024-08-06",
        "openai/gpt-4o",
        "gpt-4o",
    ]


@pytest.mark.parametrize("rate", [-1.0, math.nan, math.inf])
def test_model_price_refuses_nonsense_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="input_per_million"):
        ModelPrice(input_per_million=rate, output_per_million=1)


def test_negative_usage_never_refunds() -> None:
    price = ModelPrice(input_per_million=1, output_per_million=1)
    assert price.cost(-5, -5, cached_prompt_tokens=-3) == 0


def test_context_windows_come_from_the_library_an_override_or_the_default() -> None:
    overrides = {"my-llama": ModelPrice(1, 2, context_window=8192), "my-other": ModelPrice(1, 2)}
    table = PriceTable(overrides, UnknownModelPolicy.charge(ModelPrice(1, 2)))
    assert table.context_window("gpt-4.1") == 1_000_000
    assert table.context_window("openai/gpt-4o-mini-2024-07-18") == 128_000
    assert table.context_window("my-llama") == 8192
    assert table.context_window("my-other") == DEFAULT_CONTEXT_WINDOW
    assert table.context_window("never-heard-of") == DEFAULT_CONTEXT_WINDOW
