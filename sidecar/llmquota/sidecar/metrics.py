"""Every Prometheus metric the sidecar exports, defined once.

Labels stay low-cardinality: `key` is the ApiKey's name (never the key itself), and
`model`, the one label a client chooses, goes through `ModelLabels`. A registry per
application keeps test apps in one process from sharing counters.

The metrics every request updates (requests, spend, tokens, overhead, settles pending)
are plain floats that the registry reads at scrape time (`PlainCounter`, `PlainGauge`,
`PlainHistogram`), exposed as prometheus_client's own counters, gauges and histograms
would be: the same samples, in the same order, with the same values.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import metrics as client_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from llmquota.pricing import PriceTable

__all__ = [
    "BUDGET_GAUGE_KINDS",
    "BUDGET_KINDS",
    "MAX_PRICED_MODEL_LABELS",
    "OTHER_MODEL",
    "OVERHEAD_BUCKETS",
    "Labelled",
    "ModelLabels",
    "PlainCounter",
    "PlainGauge",
    "PlainHistogram",
    "SidecarMetrics",
]

# The `kind` labels of budgets with gauges: each is a configured object (`workload`: a
# keyless workload's own budget, a key's scope to admission). An end user is whatever a
# request body says, so it is never a label value: its soft-budget crossings are counted
# under kind `end_user` and the name of the Team or ApiKey it came through.
BUDGET_GAUGE_KINDS = ("global", "team", "member", "key", "workload")
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

    prometheus_client's `labels()` validates the values and takes a lock on every call
    (a refusal's counter, the gauges at every refresh); the children it returns never
    change, so each is fetched from it once. The dict holds no more children than the
    metric does.
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


# How prometheus_client writes a bucket's bound in its `le` label (`0.0001`, `+Inf`).
_bound_text: Callable[[float], str] = floatToGoString


def _created(created: float) -> float | None:
    """A series' `_created` sample, unless prometheus_client was told to leave them out
    (`disable_created_metrics`, `PROMETHEUS_DISABLE_CREATED_SERIES`)."""
    return created if client_metrics._use_created else None


class PlainCounter:
    """A labelled counter whose series are plain floats, collected at scrape time.

    A prometheus_client counter's `labels(...).inc()` validates the values, and its
    increment takes a lock; a request updates four series. Here an increment is a dict
    lookup and a float addition, in the same order as the library's (so the same
    value). The series, their order (first seen first) and their `_created` times are
    those its children would have.
    """

    __slots__ = ("_series", "documentation", "labelnames", "name")

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._series: dict[tuple[str, ...], list[float]] = {}  # labels -> [value, created]
        registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        """Add `amount` (never negative) to the series of these label values."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0, time.time()]
        series[0] += amount

    def describe(self) -> Iterable[Metric]:
        """The family, without samples: the registry's check that names are unique."""
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        """The family with every series."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (value, created) in tuple(self._series.items()):
            family.add_metric(labels, value, created=_created(created))
        return [family]


class PlainGauge:
    """An unlabelled gauge in a plain float, collected at scrape time (see
    `PlainCounter`): set after every request's settle."""

    __slots__ = ("_value", "documentation", "name")

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self._value = 0.0
        registry.register(self)

    def set(self, value: float) -> None:
        """The gauge's value from now on."""
        self._value = float(value)

    def describe(self) -> Iterable[Metric]:
        """The family, without samples: the registry's check that names are unique."""
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        """The family with its one sample."""
        return [GaugeMetricFamily(self.name, self.documentation, value=self._value)]


class PlainHistogram:
    """An unlabelled histogram in plain floats, collected at scrape time (see
    `PlainCounter`): the buckets, count, sum and `_created` of prometheus_client's."""

    __slots__ = ("_bounds", "_counts", "_created", "_le", "_sum", "documentation", "name")

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = [*map(float, buckets), *(() if buckets[-1] == math.inf else (math.inf,))]
        self._le = [_bound_text(bound) for bound in self._bounds]
        self._counts = [0.0] * len(self._bounds)
        self._sum = 0.0
        self._created = time.time()
        registry.register(self)

    def observe(self, amount: float) -> None:
        """Count `amount` (a duration: never NaN) in the first bucket it fits in."""
        self._sum += amount
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1

    def describe(self) -> Iterable[Metric]:
        """The family, without samples: the registry's check that names are unique."""
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        """The family: cumulative buckets, count, sum, created."""
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0.0, []
        for le, count in zip(self._le, self._counts, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        family.add_metric([], buckets, self._sum)
        created = _created(self._created)
        if created is not None:
            family.add_sample(f"{self.name}_created", {}, created)
        return [family]


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
    """`text` with whatever cannot be encoded as UTF-8 (lone surrogates) replaced; ASCII
    (most names, and an allowed model's is checked per request) is as it is."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class SidecarMetrics:
    """The sidecar's metrics, all registered in `registry`."""

    registry: CollectorRegistry
    requests: PlainCounter
    spend: PlainCounter
    tokens: PlainCounter
    remaining_budget: Labelled[Gauge]
    soft_budget_exceeded: Labelled[Gauge]
    soft_budget_crossings: Labelled[Counter]
    rate_limited: Labelled[Counter]
    audit_refusals: Labelled[Counter]
    overhead: PlainHistogram
    settle_retries: Counter
    settles_pending: PlainGauge
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
            requests=PlainCounter(
                "llmquota_requests",
                "Requests seen by the sidecar, by outcome (served, budget_exceeded, ...).",
                [*subject, "outcome"],
                registry=registry,
            ),
            spend=PlainCounter(
                "llmquota_spend_usd",
                "USD charged for served requests.",
                subject,
                registry=registry,
            ),
            tokens=PlainCounter(
                "llmquota_tokens",
                "Tokens charged, by direction (input or output).",
                [*subject, "direction"],
                registry=registry,
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
            overhead=PlainHistogram(
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
            settles_pending=PlainGauge(
                "llmquota_settles_pending",
                "Settles of served requests held in memory until the store answers again.",
                registry,
            ),
        )
