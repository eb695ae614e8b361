"""The CRDs in crds/ are the pydantic models' schema, and a schema users can `explain`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmquota.crdgen import crd_for, render_all
from llmquota.models import RESOURCE_KINDS

CRD_DIR = Path(__file__).parents[3] / "crds"


def test_crd_files_are_generated_from_the_models() -> None:
    rendered = render_all()
    on_disk = {path.name: path.read_text() for path in CRD_DIR.glob("*.yaml")}
    assert on_disk == rendered, "crds/ is stale: run `make crds`"


def _fields_without_description(node: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}"
        if name != "metadata" and not child.get("description"):
            missing.append(child_path)
        missing += _fields_without_description(child, child_path)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            missing += _fields_without_description(node[key], f"{path}[]")
    return missing


@pytest.mark.parametrize("kind", RESOURCE_KINDS.values(), ids=list(RESOURCE_KINDS))
def test_every_field_has_a_description(kind: Any) -> None:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _fields_without_description(schema, kind.crd.kind) == []


@pytest.mark.parametrize("kind", RESOURCE_KINDS.values(), ids=list(RESOURCE_KINDS))
def test_schema_is_structural(kind: Any) -> None:
    text = yaml.safe_dump(crd_for(kind))
    for forbidden in ("$ref", "anyOf", "$defs", "title:", "additionalProperties: false"):
        assert forbidden not in text


@pytest.mark.parametrize("kind_name", ["Team", "ApiKey"])
def test_subjects_refuse_inline_and_ref_together(kind_name: str) -> None:
    spec = crd_for(RESOURCE_KINDS[kind_name])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = [rule["rule"] for rule in spec["properties"]["spec"]["x-kubernetes-validations"]]
    assert "!(has(self.budget) && has(self.budgetRef))" in rules
    assert "!(has(self.rateLimit) && has(self.rateLimitRef))" in rules


def test_conditions_are_a_list_map_keyed_on_type() -> None:
    schema = crd_for(RESOURCE_KINDS["Team"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_chart_ships_the_same_crds() -> None:
    chart_dir = CRD_DIR.parent / "charts" / "llmquota" / "crd-files"
    in_chart = {path.name: path.read_text() for path in chart_dir.glob("*.yaml")}
    assert in_chart == render_all(), "the chart's CRDs are stale: run `make crds`"
