"""An incomplete policy (limits that could not be resolved) is refused as such: 503
policy_incomplete with the reason, before any other check, never as an unknown key."""

from __future__ import annotations

from datetime import UTC, datetime

from llmquota.policy.decision import check_key
from llmquota.policy.limits import PolicyRefusal, ResolvedPolicy

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_an_incomplete_policy_is_503_policy_incomplete_naming_the_reason() -> None:
    policy = ResolvedPolicy(
        key_hash="h",
        namespace="ns",
        key_name="bot",
        blocked=True,
        refusal=PolicyRefusal(
            reason="BudgetNotFound",
            message="spec.budgetRef: Budget 'tier' not found in namespace ns",
        ),
    )
    refused = check_key(policy, "gpt-4o-mini", NOW)
    assert refused is not None
    assert (refused.status, refused.error_type, refused.code) == (
        503,
        "service_unavailable",
        "policy_incomplete",
    )
    assert "Budget 'tier' not found" in refused.message
    assert "BudgetNotFound" in refused.message


def test_a_complete_policy_is_not_refused_for_it() -> None:
    policy = ResolvedPolicy(key_hash="h", namespace="ns", key_name="bot")
    assert check_key(policy, "gpt-4o-mini", NOW) is None


def test_an_incomplete_workload_policy_names_the_team_not_an_empty_key() -> None:
    """A Team's workload policy has no key: its refusal says whose requests it refuses."""
    policy = ResolvedPolicy(
        key_hash="h",
        namespace="ns",
        key_name="",
        team="chatbots",
        refusal=PolicyRefusal(
            reason="BudgetNotFound",
            message="spec.workloadBudgetRef: Budget 'per-workload' not found in namespace ns",
        ),
    )
    refused = check_key(policy, "gpt-4o-mini", NOW)
    assert refused is not None
    assert refused.message.startswith("Keyless access of team chatbots cannot be used")
