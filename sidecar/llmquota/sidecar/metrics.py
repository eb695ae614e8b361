"""Every Prometheus metric the sidecar exports, defined once.

Labels stay low-cardinality: `key` is the ApiKey's name (never the key itself), and
`model`, the one label a client chooses, goes through `ModelLabels`. A registry per
application keeps test apps in one process from sharing counters.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmquota.pricing import PriceTable

__all__ = [
    "BUDGET_GAUGE_KINDS",
    "BUDGET_KINDS",
    "MAX_PRICED_MODEL_LABELS",
    "OTHER_MODEL",
    "OVERHEAD_BUCKETS",
    "Labelled",
    "ModelLabels",
    "SidecarMetrics",
]

# The scope kinds whose budgets have gauges: each is a configured object. An end user is
# whatever a request body says, so it is never a label value: its soft-budget crossings
# are counted under kind `end_user` and the name of the Team or ApiKey it came through.
BUDGET_GAUGE_KINDS = ("global", "team", "member", "key")
BUDGET_KINDS = (*BUDGET_GAUGE_KINDS, "end_user")

# The `model` label of a name that is neither allowed to the key nor priced.
OTHER_MODEL = "other"
# The price library matches some names by prefix (`claude-3-5-sonnet-<anything>`), so
# "priced" alone does not bound the label's values; the first this many do.
MAX_PRICED_MODEL_LABELS = 200

# Sidecar overhead is sub-millisecond when healthy; buckets resolve that range finely.
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
)  # fmt: skip


_Metric = TypeVar("_Metric", Counter, Gauge)


class Labelled(Generic[_Metric]):
    """A labelled metric whose children are looked up in a plain dict.

    prometheus_client's `labels()` validates the values and takes a lock on every call,
    several times per request on the hot path; the children it returns never change, so
    each is fetched from it once. The dict holds no more children than the metric does.
    """

    __slots__ = ("_children", "metric")

    metric: _Metric

    def __init__(self, metric: _Metric) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], _Metric] = {}

    def labels(self, *values: str) -> _Metric:
        """The child for these label values."""
        try:
            return self._children[values]
        except KeyError:
            child: _Metric = self.metric.labels(*values)
            self._children[values] = child
            return child


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
    requests: Labelled[Counter]
    spend: Labelled[Counter]
    tokens: Labelled[Counter]
    remaining_budget: Labelled[Gauge]
    soft_budget_exceeded: Labelled[Gauge]
    soft_budget_crossings: Labelled[Counter]
    rate_limited: Labelled[Counter]
    audit_refusals: Labelled[Counter]
    overhead: Histogram
    settle_retries: Counter
    settles_pending: Gauge
    model_labels: ModelLabels
    workload: str  # the `workload` label: this Pod's workload ("" when not injected)

    @classmethod
    def create(cls, prices: PriceTable, workload: str = "") -> SidecarMetrics:
        """A fresh registry holding every metric; `prices` tells which models are known,
        `workload` is the Pod's (`deployment/chatbot`), never the Pod's own name."""
        registry = CollectorRegistry()
        subject = ["namespace", "team", "key", "model", "workload"]
        return cls(
            registry=registry,
            model_labels=ModelLabels(prices),
            workload=workload,
            requests=Labelled(
                Counter(
                    "llmquota_requests",
                    "Requests seen by the sidecar, by outcome (served, budget_exceeded, ...).",
                    [*subject, "outcome"],
                    registry=registry,
                )
            ),
            spend=Labelled(
                Counter(
                    "llmquota_spend_usd",
                    "USD charged for served requests.",
                    subject,
                    registry=registry,
                )
            ),
            tokens=Labelled(
                Counter(
                    "llmquota_tokens",
                    "Tokens charged, by direction (input or output).",
                    [*subject, "direction"],
                    registry=registry,
                )
            ),
            remaining_budget=Labelled(
                Gauge(
                    "llmquota_remaining_budget_usd",
                    "USD left in a budget's current window (in-flight reservations count as "
                    "spent), as last read by this sidecar; one series per window of the "
                    "budget, and enforcement Audit for a budget that never refuses.",
                    ["namespace", "kind", "name", "window", "enforcement"],
                    registry=registry,
                )
            ),
            soft_budget_exceeded=Labelled(
                Gauge(
                    "llmquota_soft_budget_exceeded",
                    "1 while a budget's spend in its current window is at or over its "
                    "softBudget, else 0.",
                    ["namespace", "kind", "name"],
                    registry=registry,
                )
            ),
            soft_budget_crossings=Labelled(
                Counter(
                    "llmquota_soft_budget_crossings",
                    "Budget windows in which this sidecar saw spend cross the softBudget.",
                    ["namespace", "kind", "name"],
                    registry=registry,
                )
            ),
            rate_limited=Labelled(
                Counter(
                    "llmquota_rate_limited",
                    "Requests refused by a rate limit, by limit (rpm, tpm, ...).",
                    ["namespace", "team", "key", "limit"],
                    registry=registry,
                )
            ),
            audit_refusals=Labelled(
                Counter(
                    "llmquota_audit_refusals",
                    "Requests served that an audited limit (enforcement: Audit) would have "
                    "refused, by the first such scope.",
                    ["namespace", "kind", "name"],
                    registry=registry,
                )
            ),
            overhead=Histogram(
                "llmquota_overhead_seconds",
                "Time a request spends in the sidecar, the upstream's time excluded.",
                buckets=OVERHEAD_BUCKETS,
                registry=registry,
            ),
            settle_retries=Counter(
                "llmquota_settle_retries",
                "Settle (or free) calls retried because the store did not answer.",
                registry=registry,
            ),
            settles_pending=Gauge(
                "llmquota_settles_pending",
                "Settles of served requests held in memory until the store answers again.",
                registry=registry,
            ),
        )
