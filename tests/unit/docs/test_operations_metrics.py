"""docs/operations.md's metric tables against the metric definitions: every metric the
sidecar (sidecar/metrics.py) and the operator (operator/metrics.py) define is listed with
its type and labels, nothing else is, and the label values the page names for `kind` and
`limit` are the ones the code emits."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import get_args

import pytest
from prometheus_client.metrics import MetricWrapperBase

from llmquota.operator import metrics as operator_metrics
from llmquota.policy.limits import ScopeKind
from llmquota.pricing import load_price_table
from llmquota.sidecar.metrics import (
    BUDGET_GAUGE_KINDS,
    BUDGET_KINDS,
    Labelled,
    PlainCounter,
    PlainGauge,
    PlainHistogram,
    SidecarMetrics,
)

REPO = Path(__file__).resolve().parents[3]
OPERATIONS = REPO / "docs" / "operations.md"
ADMIT_LUA = REPO / "core" / "llmquota" / "store" / "lua" / "admit.lua"
# Refusals that are 402s (budgets), never counted in llmquota_rate_limited_total.
BUDGET_LIMITS = {"max_budget", "model_max_budget", "key_share"}
Row = tuple[str, str, frozenset[str]]


def _section(heading: str) -> str:
    """The text under the markdown heading that starts with `heading`, to the next
    heading of its level or above."""
    text = OPERATIONS.read_text()
    start = text.index(f"\n{heading}")
    level = len(heading) - len(heading.lstrip("#"))
    following = re.search(rf"\n#{{1,{level}}} ", text[start + 1 :])
    return text[start : start + 1 + following.start()] if following else text[start:]


def _table(heading: str) -> list[list[str]]:
    """The cells of the first table under `heading`, header and rule dropped."""
    lines = [line for line in _section(heading).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _documented(heading: str) -> set[Row]:
    rows = set()
    for name, kind, labels, *_ in _table(heading):
        [metric] = _ticked(name)
        names = {label.strip(" `") for label in labels.split(",")} - {"—"}
        rows.add((metric, kind, frozenset(names)))
    return rows


def _defined(metric: MetricWrapperBase) -> Row:
    # prometheus_client keeps name, type and label names only in these attributes.
    name, kind = metric._name, str(metric._type)
    exposed = f"{name}_total" if kind == "counter" else name
    return exposed, kind, frozenset(metric._labelnames)


def _sidecar_metrics() -> set[Row]:
    created = SidecarMetrics.create(load_price_table(None))
    found = set()
    for field in dataclasses.fields(created):
        value = getattr(created, field.name)
        metric = value.metric if isinstance(value, Labelled) else value
        if isinstance(metric, MetricWrapperBase):
            found.add(_defined(metric))
        elif isinstance(value, PlainCounter):
            found.add((f"{value.name}_total", "counter", frozenset(value.labelnames)))
        elif isinstance(value, PlainGauge | PlainHistogram):
            kind = "gauge" if isinstance(value, PlainGauge) else "histogram"
            found.add((value.name, kind, frozenset()))
    return found


def test_the_sidecar_table_lists_every_sidecar_metric() -> None:
    assert _documented("### Sidecar") == _sidecar_metrics()


def test_the_operator_table_lists_every_operator_metric() -> None:
    defined = {
        _defined(value)
        for value in vars(operator_metrics).values()
        if isinstance(value, MetricWrapperBase)
    }
    assert _documented("### Operator") == defined


def _label_values(label: str) -> set[str]:
    """The values a `### Label values` row lists (before a `: ` that explains them)."""
    rows = {_ticked(row[0])[0]: row[1] for row in _table("### Label values")}
    return set(_ticked(rows[label].split(": ", 1)[0]))


def test_limit_values_are_the_ones_admit_lua_refuses_with() -> None:
    refused_with = set(re.findall(r"= refused\(check, '(\w+)'", ADMIT_LUA.read_text()))
    assert _label_values("limit") == refused_with - BUDGET_LIMITS


def test_kind_values_are_the_budget_scope_kinds() -> None:
    assert _label_values("kind") == set(BUDGET_KINDS)
    assert set(BUDGET_GAUGE_KINDS) < set(BUDGET_KINDS)
    # A workload's own budget is a key's scope, labelled after what it is.
    assert set(BUDGET_KINDS) - {"workload"} <= set(get_args(ScopeKind))


@pytest.mark.parametrize("stale", ["`parallel`", "enduser"])
def test_no_label_value_the_code_never_sets(stale: str) -> None:
    assert stale not in _section("## Metrics")
