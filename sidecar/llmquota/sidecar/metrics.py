"""Every Prometheus metric the sidecar exports, defined once.

Labels stay low-cardinality: `key` is the ApiKey's name (never the key itself), and
`model`, the one label a client chooses, goes through `ModelLabels`. A registry per
application keeps test apps in one process from sharing counters.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmquota.pricing import PriceTable

__all__ = [
    "MAX_PRICED_MODEL_LABELS",
    "OTHER_MODEL",
    "OVERHEAD_BUCKETS",
    "ModelLabels",
    "SidecarMetrics",
]

# The `model` label of a name that is neither allowed to the key nor priced.
OTHER_MODEL = "other"
# The price library matches some names by prefix (`claude-3-5-sonnet-<anything>`), so
# "priced" alone does not bound the label's values; the first this many do.
MAX_PRICED_MODEL_LABELS = 200

# Sidecar overhead is sub-millisecond when healthy; buckets resolve that range finely.
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
)  # fmt: skip


@dataclass(slots=True)
class ModelLabels:
    """The `model` label of a model name taken from a request body.

    A client can send any name, so every new one would be a new time series, and one
    that is not valid UTF-8 (a lone surrogate, from JSON's `\\ud800`) would make every
    scrape fail. The label is the name only when it is among the key's allowed models
    (configuration bounds those) or is priced (the first `MAX_PRICED_MODEL_LABELS`
    such names); anything else is `other`.
    """

    prices: PriceTable
    _priced: set[str] = field(default_factory=set)

    def label(self, model: str, allowed_models: Collection[str]) -> str:
        """The label for `model` sent with a key that may use `allowed_models`."""
        if not model:
            return model
        if model in self._priced:
            return model
        if model in allowed_models:
            return _valid_utf8(model)
        if len(self._priced) < MAX_PRICED_MODEL_LABELS and self.prices.knows(model):
            label = _valid_utf8(model)
            self._priced.add(label)
            return label
        return OTHER_MODEL


def _valid_utf8(text: str) -> str:
    """`text` with whatever cannot be encoded as UTF-8 (lone surrogates) replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class SidecarMetrics:
    """The sidecar's metrics, all registered in `registry`."""

    registry: CollectorRegistry
    requests: Counter
    spend: Counter
    tokens: Counter
    remaining_budget: Gauge
    rate_limited: Counter
    overhead: Histogram
    model_labels: ModelLabels

    @classmethod
    def create(cls, prices: PriceTable) -> SidecarMetrics:
        """A fresh registry holding every metric; `prices` tells which models are known."""
        registry = CollectorRegistry()
        subject = ["namespace", "team", "key", "model"]
        return cls(
            registry=registry,
            model_labels=ModelLabels(prices),
            requests=Counter(
                "llmquota_requests",
                "Requests seen by the sidecar, by outcome (served, budget_exceeded, ...).",
                [*subject, "outcome"],
                registry=registry,
            ),
            spend=Counter(
                "llmquota_spend_usd",
                "USD charged for served requests.",
                subject,
                registry=registry,
            ),
            tokens=Counter(
                "llmquota_tokens",
                "Tokens charged, by direction (input or output).",
                [*subject, "direction"],
                registry=registry,
            ),
            remaining_budget=Gauge(
                "llmquota_remaining_budget_usd",
                "USD left in a budget's current window, as last seen by this sidecar.",
                ["namespace", "kind", "name"],
                registry=registry,
            ),
            rate_limited=Counter(
                "llmquota_rate_limited",
                "Requests refused by a rate limit, by limit (rpm, tpm, ...).",
                ["namespace", "team", "key", "limit"],
                registry=registry,
            ),
            overhead=Histogram(
                "llmquota_overhead_seconds",
                "Time a request spends in the sidecar, the upstream's time excluded.",
                buckets=OVERHEAD_BUCKETS,
                registry=registry,
            ),
        )
