"""CustomResourceDefinitions generated from the pydantic models: one schema, two uses.

`llmquota crds --write crds` writes `crds/<plural>.llmquota.dev.yaml`; a unit test holds
those files equal to what this module generates, so the CRDs cannot drift from the
models. JSON Schema from pydantic is turned into a structural OpenAPI v3 schema:
references inlined, nullables collapsed (absent = unset), `title` dropped, and the
models' `x-kubernetes-*` extensions (CEL rules, list-maps) kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from llmquota.models import API_GROUP, API_VERSION, RESOURCE_KINDS, ResourceKind

__all__ = ["add_arguments", "crd_for", "render_all", "run", "structural"]


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases: shared sub-schemas are written out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_DROPPED = frozenset({"title", "additionalProperties", "$defs"})
_EXCLUSIVE_BOUNDS = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Inline `$ref`s, keeping sibling keys (a field's description wins over the model's)."""
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        return _resolve({**target, **siblings}, definitions)
    return schema


def structural(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node as a structural schema node."""
    schema = _resolve(schema, definitions)
    any_of = schema.get("anyOf")
    if any_of is not None:
        options = [option for option in any_of if option.get("type") != "null"]
        if len(options) != 1:
            msg = f"cannot express a union in a structural schema: {schema}"
            raise ValueError(msg)
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        return structural({**_resolve(options[0], definitions), **rest}, definitions)
    node: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED or (key == "default" and value is None):
            continue
        if key == "properties":
            node[key] = {name: structural(sub, definitions) for name, sub in value.items()}
        elif key == "items":
            node[key] = structural(value, definitions)
        elif key == "const":
            node["enum"] = [value]
        elif key in _EXCLUSIVE_BOUNDS:
            # JSON Schema's exclusive bound is a number; OpenAPI v3.0's, which CRDs
            # speak, is a flag on `minimum` / `maximum`.
            node[_EXCLUSIVE_BOUNDS[key]] = value
            node[key] = True
        else:
            node[key] = value
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        node["additionalProperties"] = structural(extra, definitions)
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    return node


def _part(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return structural(schema, schema.get("$defs", {}))


def crd_for(kind: ResourceKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    info = kind.crd
    fields = kind.model_fields
    spec_model = fields["spec"].annotation
    status_model = fields["status"].annotation
    status_model = next(arg for arg in status_model.__args__ if arg is not type(None))  # type: ignore[union-attr]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "llmquota"},
        },
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": list(info.short_names),
                "categories": ["llmquota"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(info.printer_columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (kind.__doc__ or info.kind).strip(),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind of resource."},
                                "metadata": {"type": "object"},
                                "spec": _part(spec_model),  # type: ignore[arg-type]
                                "status": _part(status_model),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text, for every kind."""
    header = "# Generated from the pydantic models by `llmquota crds`; do not edit.\n"
    return {
        f"{kind.crd.plural}.{API_GROUP}.yaml": header
        + yaml.dump(crd_for(kind), Dumper=_PlainDumper, sort_keys=False, width=100)
        for kind in RESOURCE_KINDS.values()
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`llmquota crds [--write DIR]`."""
    parser.add_argument(
        "--write", metavar="DIR", type=Path, help="write one file per kind (default: print)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the CRDs as one YAML stream, or write them into a folder."""
    rendered = render_all()
    if args.write is None:
        print("---\n".join(rendered.values()), end="")
        return 0
    args.write.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.write / name).write_text(text)
    return 0
