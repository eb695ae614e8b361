"""Resource models: the one source of the custom resources' schema.

The CRDs in `crds/` are generated from these models (`llmquota crds`), and both the
operator and the sidecar's standalone mode validate manifests with them.
"""

from llmquota.models.apikey import ApiKey, ApiKeySpec, ApiKeyStatus, check_models_within_team
from llmquota.models.budget import Budget, BudgetSpec, BudgetStatus
from llmquota.models.budgetoverride import (
    BudgetOverride,
    BudgetOverrideSpec,
    BudgetOverrideStatus,
    OverrideTarget,
)
from llmquota.models.common import (
    API_GROUP,
    API_VERSION,
    Condition,
    ObjectMeta,
    ObjectRef,
    ResourceModel,
    SpecValidationError,
)
from llmquota.models.ratelimit import ModelRateLimit, RateLimit, RateLimitSpec, RateLimitStatus
from llmquota.models.registry import RESOURCE_KINDS, ResourceKind, parse_resource
from llmquota.models.team import (
    LabelSelector,
    LabelSelectorRequirement,
    Team,
    TeamMember,
    TeamSpec,
    TeamStatus,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "RESOURCE_KINDS",
    "ApiKey",
    "ApiKeySpec",
    "ApiKeyStatus",
    "Budget",
    "BudgetOverride",
    "BudgetOverrideSpec",
    "BudgetOverrideStatus",
    "BudgetSpec",
    "BudgetStatus",
    "Condition",
    "LabelSelector",
    "LabelSelectorRequirement",
    "ModelRateLimit",
    "ObjectMeta",
    "ObjectRef",
    "OverrideTarget",
    "RateLimit",
    "RateLimitSpec",
    "RateLimitStatus",
    "ResourceKind",
    "ResourceModel",
    "SpecValidationError",
    "Team",
    "TeamMember",
    "TeamSpec",
    "TeamStatus",
    "check_models_within_team",
    "parse_resource",
]
