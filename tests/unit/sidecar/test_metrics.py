"""The `model` label: bounded and always valid UTF-8, whatever name a client sends."""

from __future__ import annotations

from prometheus_client import generate_latest

from llmquota.pricing import load_price_table
from llmquota.sidecar.metrics import (
    MAX_PRICED_MODEL_LABELS,
    OTHER_MODEL,
    ModelLabels,
    SidecarMetrics,
)

PRICES = load_price_table(None)


def test_allowed_and_priced_models_are_their_own_label() -> None:
    labels = ModelLabels(PRICES)
    assert labels.label("gpt-4o-mini", ()) == "gpt-4o-mini"
    assert labels.label("in-house-llama", ["in-house-llama"]) == "in-house-llama"
    assert labels.label("", ()) == ""


def test_other_names_are_other() -> None:
    labels = ModelLabels(PRICES)
    assert labels.label("no-such-model-4711", ()) == OTHER_MODEL
    assert labels.label("gpt-4o-mini\ud800", ()) == OTHER_MODEL
    assert labels.label("in-house-llama", ["gpt-4o-mini"]) == OTHER_MODEL


def test_an_allowed_name_that_is_not_utf8_is_made_so() -> None:
    labels = ModelLabels(PRICES)
    assert labels.label("odd\ud800", ["odd\ud800"]) == "odd?"


def test_priced_names_are_capped_since_the_library_matches_prefixes() -> None:
    labels = ModelLabels(PRICES)
    names = [f"claude-3-5-sonnet-{n}" for n in range(MAX_PRICED_MODEL_LABELS + 5)]
    assert all(PRICES.knows(name) for name in names)
    given = [labels.label(name, ()) for name in names]
    assert given[:MAX_PRICED_MODEL_LABELS] == names[:MAX_PRICED_MODEL_LABELS]
    assert set(given[MAX_PRICED_MODEL_LABELS:]) == {OTHER_MODEL}
    assert labels.label(names[0], ()) == names[0]


def test_a_scrape_never_fails_on_a_label() -> None:
    metrics = SidecarMetrics.create(PRICES)
    model = metrics.model_labels.label("gpt-4o-mini\ud800", ())
    metrics.requests.inc(("default", "", "bot", model, "", "served"))
    assert b'model="other"' in generate_latest(metrics.registry)
