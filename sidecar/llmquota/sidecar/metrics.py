"""Every Prometheus metric the sidecar exports, defined once.

Labels stay low-cardinality: `key` is the ApiKey's name (never the key itself), `model`
is a model the price table knows (unknown ones are refused before they are counted).
A registry per application keeps test apps in one process from sharing counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["OVERHEAD_BUCKETS", "SidecarMetrics"]

# Sidecar overhead is sub-millisecond when healthy; buckets resolve that range finely.
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
)  # fmt: skip


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

    @classmethod
    def create(cls) -> SidecarMetrics:
        """A fresh registry holding every metric."""
        registry = CollectorRegistry()
        subject = ["namespace", "team", "key", "model"]
        return cls(
            registry=registry,
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
