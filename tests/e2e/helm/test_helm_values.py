"""The chart's values: documented, closed by the schema, and the dashboard's metrics.

No helm needed: these read values.yaml, values.schema.json and the dashboard JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

# The contract's metric names (prefix llmquota_), sidecar and operator.
CONTRACT_METRICS = {
    "requests_total",
    "spend_usd_total",
    "tokens_total",
    "remaining_budget_usd",
    "budget_exhausts_in_seconds",
    "rate_limited_total",
    "overhead_seconds",
    "reconcile_total",
    "reconcile_duration_seconds",
    "budget_resets_total",
}
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9_]*):(?P<value>.*)$")


def _object_schemas(schema: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        if "properties" in schema:
            found.append((path, schema))
        for key, child in schema.items():
            found += _object_schemas(child, f"{path}.{key}")
    elif isinstance(schema, list):
        for index, child in enumerate(schema):
            found += _object_schemas(child, f"{path}[{index}]")
    return found


def test_schema_refuses_unknown_keys_everywhere(chart_dir: Path) -> None:
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    objects = _object_schemas(schema)
    assert len(objects) > 20
    for path, object_schema in objects:
        assert object_schema.get("additionalProperties") is False, path


def test_schema_covers_every_default(chart_dir: Path) -> None:
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())

    def check(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in the schema"
                check(child, node["properties"][key], f"{path}.{key}")

    check(values, schema, "")


def test_every_value_is_documented(chart_dir: Path) -> None:
    """Each key has prose, a default and an example, itself or through its parent."""
    lines = (chart_dir / "values.yaml").read_text().splitlines()
    comment: list[str] = []
    # (indent, documented) of the enclosing keys.
    parents: list[tuple[int, bool]] = []
    undocumented = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        match = KEY_LINE.match(line)
        if match is None:
            comment = []
            continue
        indent = len(match["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        text = " ".join(comment)
        documented = "Default:" in text and "For example" in text
        inherited = any(parent_documented for _, parent_documented in parents)
        following = next((later for later in lines[number + 1 :] if later.strip()), "")
        is_parent = not match["value"].strip() and (
            len(following) - len(following.lstrip()) > indent
            and not following.strip().startswith("- ")
        )
        if not (documented or inherited or is_parent):
            undocumented.append(f"line {number + 1}: {match['key']}")
        if is_parent and not (documented or inherited) and not comment:
            undocumented.append(f"line {number + 1}: {match['key']} has no prose")
        parents.append((indent, documented or inherited))
        comment = []
    assert not undocumented, "values without prose, default and example:\n" + "\n".join(
        undocumented
    )


def test_dashboard_uses_contract_metrics(chart_dir: Path) -> None:
    dashboard = json.loads((chart_dir / "dashboards" / "llmquota.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expression in expressions
        for name in re.findall(r"llmquota_([a-z_]+)", expression)
    }
    assert used == CONTRACT_METRICS
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
