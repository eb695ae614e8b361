"""Ready: of a spec that does not validate, of a resolution; and the policy of a key
whose limits cannot be resolved (it only refuses, with 503 `policy_incomplete`)."""

from __future__ import annotations

from pydantic import ValidationError

from llmquota.models import ApiKey
from llmquota.operator.rules.conditions import Observation
from llmquota.policy.limits import PolicyRefusal, ResolvedPolicy
from llmquota.policy.resolve import ResolutionError

__all__ = ["incomplete_policy", "invalid_spec_observation", "ready_observation"]


def invalid_spec_observation(error: ValidationError) -> Observation:
    """Ready=False InvalidSpec, naming each field that does not validate.

    No retries follow: only a new spec can fix it.
    """
    message = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )
    return Observation("Ready", "False", "InvalidSpec", message)


def ready_observation(error: ResolutionError | None, applied: str) -> Observation:
    """Ready=True with `applied` as message, or Ready=False naming the problem."""
    if error is None:
        return Observation("Ready", "True", "Applied", applied)
    return Observation("Ready", "False", error.reason, f"{error.field}: {error.message}")


def incomplete_policy(apikey: ApiKey, key_hash: str, error: ResolutionError) -> ResolvedPolicy:
    """The policy of a key whose limits cannot be resolved: it only refuses, and says why.

    A key is refused rather than let through without its limits, and told why (not
    "unknown key").
    """
    return ResolvedPolicy(
        key_hash=key_hash,
        namespace=apikey.metadata.namespace,
        key_name=apikey.metadata.name,
        refusal=PolicyRefusal(reason=error.reason, message=f"{error.field}: {error.message}"),
    )
