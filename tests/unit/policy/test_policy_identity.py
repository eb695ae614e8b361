"""Keyless identity: which Pod is which workload, and which Team's policy it gets."""

from __future__ import annotations

from typing import Any

import pytest

from llmquota.models import Budget, LabelSelector, Team
from llmquota.policy.identity import (
    NamespacePolicies,
    OwnerRef,
    PodIdentity,
    parse_downward_labels,
    request_policy,
    selector_matches,
    workload_of,
    workload_policy_for,
)
from llmquota.policy.limits import ResolvedPolicy
from llmquota.policy.resolve import NamespaceObjects, ResolutionError, resolve_workload_policy


def _team(name: str, namespace: str = "apps", **spec: Any) -> Team:
    return Team.model_validate(
        {"kind": "Team", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )


def _budget(name: str, max_budget: float, namespace: str = "apps") -> Budget:
    return Budget.model_validate(
        {
            "kind": "Budget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"maxBudget": max_budget},
        }
    )


OBJECTS = NamespaceObjects(budgets={"per-workload": _budget("per-workload", 1)}, rate_limits={})
CHATBOT = PodIdentity("apps", {"app": "chatbot"}, "deployment/chatbot")


def _policies(*teams: Team) -> list[Any]:
    return [resolve_workload_policy(team, OBJECTS) for team in teams]


def test_a_replicaset_pod_belongs_to_its_deployment() -> None:
    owners = [OwnerRef("ReplicaSet", "chatbot-7d9f8b6c5", controller=True)]
    labels = {"app": "chatbot", "pod-template-hash": "7d9f8b6c5"}
    assert workload_of("chatbot-7d9f8b6c5-x2x4z", owners, labels) == "deployment/chatbot"


def test_a_bare_replicaset_is_its_own_workload() -> None:
    owners = [OwnerRef("ReplicaSet", "chatbot", controller=True)]
    assert workload_of("chatbot-x2x4z", owners, {}) == "replicaset/chatbot"


def test_a_cronjob_job_pod_belongs_to_the_cronjob_when_the_job_says_so() -> None:
    owners = [OwnerRef("Job", "nightly-29000000", controller=True)]
    cronjob = OwnerRef("CronJob", "nightly", controller=True)
    assert workload_of("nightly-29000000-abcde", owners, {}) == "job/nightly-29000000"
    assert workload_of("nightly-29000000-abcde", owners, {}, cronjob) == "cronjob/nightly"


def test_statefulset_and_ownerless_pods() -> None:
    owners = [OwnerRef("Unrelated", "x"), OwnerRef("StatefulSet", "db", controller=True)]
    assert workload_of("db-0", owners, {}) == "statefulset/db"
    assert workload_of("debug", [OwnerRef("Unrelated", "x")], {}) == "pod/debug"


def test_downward_api_labels_file() -> None:
    text = 'app="chatbot"\npod-template-hash="7d9f8b6c5"\ntier=""\ngarbage\n'
    assert parse_downward_labels(text) == {
        "app": "chatbot",
        "pod-template-hash": "7d9f8b6c5",
        "tier": "",
    }


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        ({"matchLabels": {"app": "chatbot"}}, True),
        ({"matchLabels": {"app": "other"}}, False),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "chatbot"]}]},
            True,
        ),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["chatbot"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
    ],
)
def test_selector_semantics(selector: dict[str, Any], *, matches: bool) -> None:
    assert selector_matches(LabelSelector.model_validate(selector), {"app": "chatbot"}) is matches


def test_a_matched_pod_is_charged_to_the_team_and_its_own_workload_counter() -> None:
    team = _team(
        "qa",
        budget={"maxBudget": 100},
        rateLimit={"rpm": 60, "maxParallelRequests": 2},
        workloadSelector={"matchLabels": {"app": "chatbot"}},
        workloadBudgetRef={"name": "per-workload"},
    )
    policy = workload_policy_for(CHATBOT, _policies(team))
    assert policy is not None
    assert policy.team == "qa"
    assert [scope.kind for scope in policy.scopes] == ["team", "key"]
    team_scope, workload_scope = policy.scopes
    assert team_scope.rate is not None
    assert team_scope.rate.max_parallel == 2
    assert workload_scope.id == "workload/apps/qa/deployment/chatbot"
    assert workload_scope.tag == team_scope.tag
    assert workload_scope.budget is not None
    assert workload_scope.budget.max_nanos == 1_000_000_000
    other = workload_policy_for(
        PodIdentity("apps", {"app": "chatbot"}, "deployment/summarizer"), _policies(team)
    )
    assert other is not None
    assert other.scopes[-1].id != workload_scope.id
    assert other.key_hash != policy.key_hash


def test_a_pod_in_another_namespace_never_matches() -> None:
    team = _team("qa", workloadSelector={})
    elsewhere = PodIdentity("other", {"app": "chatbot"}, "deployment/chatbot")
    assert workload_policy_for(elsewhere, _policies(team)) is None


def test_unmatched_labels_and_teams_without_a_selector_give_no_policy() -> None:
    assert resolve_workload_policy(_team("plain"), OBJECTS) is None
    team = _team("qa", workloadSelector={"matchLabels": {"app": "batch"}})
    assert workload_policy_for(CHATBOT, _policies(team)) is None


def test_of_two_matching_teams_the_first_by_name_is_charged() -> None:
    teams = [_team(name, workloadSelector={}) for name in ("zeta", "alpha")]
    policy = workload_policy_for(CHATBOT, _policies(*teams))
    assert policy is not None
    assert policy.team == "alpha"


def test_a_known_key_wins_and_no_identity_is_401() -> None:
    key_policy = ResolvedPolicy(key_hash="h", namespace="apps", key_name="bot")
    policies = NamespacePolicies(_policies(_team("qa", workloadSelector={})), {})
    assert request_policy(key_policy, CHATBOT, policies) is key_policy
    keyless = request_policy(None, CHATBOT, policies)
    assert keyless is not None
    assert keyless.team == "qa"
    assert keyless.refusal is None
    assert request_policy(None, None, policies) is None
    assert request_policy(None, CHATBOT, NamespacePolicies([], {})) is None


def test_an_unreadable_policy_that_might_have_matched_refuses_saying_so() -> None:
    unreadable = {"zeta": "spendCapV9: Extra inputs are not permitted", "beta": "scopes: bad"}
    refusing = request_policy(None, CHATBOT, NamespacePolicies([], unreadable))
    assert refusing is not None
    assert refusing.refusal is not None
    assert (refusing.team, refusing.refusal.reason) == ("beta", "PolicyUnreadable")
    assert "scopes: bad" in refusing.refusal.message
    # A policy that can be read and matches is used, whatever else could not be read.
    matched = NamespacePolicies(_policies(_team("qa", workloadSelector={})), unreadable)
    served = request_policy(None, CHATBOT, matched)
    assert served is not None
    assert (served.team, served.refusal) == ("qa", None)


def test_a_missing_workload_budget_names_the_field() -> None:
    team = _team("qa", workloadSelector={}, workloadBudgetRef={"name": "gone"})
    with pytest.raises(ResolutionError) as raised:
        resolve_workload_policy(team, OBJECTS)
    assert raised.value.field == "spec.workloadBudgetRef"
    assert raised.value.reason == "BudgetNotFound"


def test_workload_budget_ref_needs_a_selector() -> None:
    with pytest.raises(ValueError, match="workloadBudgetRef needs a workloadSelector"):
        _team("qa", workloadBudgetRef={"name": "per-workload"})
