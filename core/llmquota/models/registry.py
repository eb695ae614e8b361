"""Which kinds exist, and turning a manifest (a dict) into the right model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmquota.models.apikey import ApiKey
from llmquota.models.budget import Budget
from llmquota.models.budgetoverride import BudgetOverride
from llmquota.models.common import API_GROUP
from llmquota.models.ratelimit import RateLimit
from llmquota.models.team import Team

__all__ = ["RESOURCE_KINDS", "AnyResource", "ResourceKind", "parse_resource"]

AnyResource = Team | ApiKey | Budget | RateLimit | BudgetOverride
ResourceKind = type[Team] | type[ApiKey] | type[Budget] | type[RateLimit] | type[BudgetOverride]

RESOURCE_KINDS: dict[str, ResourceKind] = {
    model.crd.kind: model for model in (Team, ApiKey, Budget, RateLimit, BudgetOverride)
}


def parse_resource(manifest: Mapping[str, Any]) -> AnyResource:
    """Validate a manifest of one of llmquota's kinds; pydantic errors name the field."""
    kind = manifest.get("kind")
    api_version = str(manifest.get("apiVersion", ""))
    if kind not in RESOURCE_KINDS or not api_version.startswith(f"{API_GROUP}/"):
        msg = f"not an llmquota resource: apiVersion={api_version!r} kind={kind!r}"
        raise ValueError(msg)
    return RESOURCE_KINDS[kind].model_validate(manifest)
