"""The metrics every request updates read, on /metrics, as prometheus_client's own.

`PlainCounter`, `PlainGauge` and `PlainHistogram` keep their series in plain floats; a
scrape must not tell them from the library's `Counter`, `Gauge` and `Histogram` given the
same updates: the same
families, series, order, values (float sums added in the same order), `_created`
samples, in both exposition formats, and a registry's name checks still apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import metrics as client_metrics
from prometheus_client.openmetrics import exposition as openmetrics

from llmquota.pricing import load_price_table
from llmquota.sidecar.metrics import (
    OVERHEAD_BUCKETS,
    PlainCounter,
    PlainGauge,
    PlainHistogram,
    SidecarMetrics,
)

openmetrics_latest: Callable[[CollectorRegistry], bytes] = openmetrics.generate_latest

# Label values as a Pod's names and a client's model names make them, escapes included.
A = ("default", "qa", "bot", "gpt-4o-mini", "deployment/chatbot")
B = ("ns-2", "", 'say "hi"\\\n', "other", "")
# (subject, outcome, cost, prompt tokens, completion tokens, overhead seconds), in order.
REQUESTS = [
    (B, "rate_limited", None, 0, 0, 0.0002),
    (A, "served", 0.1, 12, 16, 0.0005),  # on a bucket's bound
    (A, "served", 0.2, 7, 0, 0.0),
    (B, "served", 1e-17, 3, 5, 0.75),  # past the last finite bound
    (A, "budget_exceeded", None, 0, 0, 0.000_31),
    (A, "served", 0.3, 2**40, 1, 0.0031),
]


def _plain(registry: CollectorRegistry) -> Callable[..., None]:
    metrics = SidecarMetrics.create(load_price_table(None))
    counters = (metrics.requests, metrics.spend, metrics.tokens)
    requests, spend, tokens = (
        PlainCounter(c.name, c.documentation, c.labelnames, registry) for c in counters
    )
    overhead = PlainHistogram(
        metrics.overhead.name, metrics.overhead.documentation, OVERHEAD_BUCKETS, registry
    )
    pending = PlainGauge(
        metrics.settles_pending.name, metrics.settles_pending.documentation, registry
    )

    def record(subject: tuple[str, ...], outcome: str, cost: float | None, *rest: float) -> None:
        prompt, completion, overhead_s = rest
        requests.inc((*subject, outcome))
        overhead.observe(overhead_s)
        pending.set(len(outcome))
        if cost is not None:
            spend.inc(subject, cost)
            tokens.inc((*subject, "input"), prompt)
            tokens.inc((*subject, "output"), completion)

    return record


def _library(registry: CollectorRegistry) -> Callable[..., None]:
    metrics = SidecarMetrics.create(load_price_table(None))
    requests, spend, tokens = (
        Counter(c.name, c.documentation, c.labelnames, registry=registry)
        for c in (metrics.requests, metrics.spend, metrics.tokens)
    )
    overhead = Histogram(
        metrics.overhead.name,
        metrics.overhead.documentation,
        buckets=OVERHEAD_BUCKETS,
        registry=registry,
    )
    pending = Gauge(
        metrics.settles_pending.name, metrics.settles_pending.documentation, registry=registry
    )

    def record(subject: tuple[str, ...], outcome: str, cost: float | None, *rest: float) -> None:
        prompt, completion, overhead_s = rest
        requests.labels(*subject, outcome).inc()
        overhead.observe(overhead_s)
        pending.set(len(outcome))
        if cost is not None:
            spend.labels(*subject).inc(cost)
            tokens.labels(*subject, "input").inc(prompt)
            tokens.labels(*subject, "output").inc(completion)

    return record


@pytest.mark.parametrize("created", [True, False])
def test_a_scrape_reads_as_prometheus_clients_own_metrics(
    monkeypatch: pytest.MonkeyPatch, *, created: bool
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_764_590_400.25)
    monkeypatch.setattr(client_metrics, "_use_created", created)
    plain, library = CollectorRegistry(), CollectorRegistry()
    records = (_plain(plain), _library(library))
    scrapes: list[list[bytes]] = [[], []]
    for request in REQUESTS:
        for record, scraped, registry in zip(records, scrapes, (plain, library), strict=True):
            record(*request)
            scraped.append(generate_latest(registry) + openmetrics_latest(registry))
    assert scrapes[0] == scrapes[1]
    assert b'llmquota_tokens_total{direction="input"' in scrapes[0][-1]


def test_an_empty_scrape_reads_the_same_too() -> None:
    plain, library = CollectorRegistry(), CollectorRegistry()
    _plain(plain)
    _library(library)
    without_created = [
        b"\n".join(line for line in generate_latest(r).splitlines() if b"_created" not in line)
        for r in (plain, library)
    ]
    assert without_created[0] == without_created[1]


def test_a_name_already_registered_is_refused() -> None:
    registry = CollectorRegistry()
    PlainCounter("llmquota_requests", "Requests.", ["outcome"], registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("llmquota_requests", "Requests.", ["outcome"], registry=registry)
