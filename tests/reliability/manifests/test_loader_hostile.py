"""The standalone loader meets hostile manifests: it never raises, and names each bad
object's file and field (the sidecar then refuses the folder, keeping its last good one)."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.reliability.manifests.hostile_cases import HostileCase, hostile_params

from llmquota.manifests import ManifestResolver, ObjectId, Resolution
from llmquota.policy.limits import ResolvedPolicy

GOOD_KEY = """
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: good}
spec: {budget: {maxBudget: 1}}
---
apiVersion: v1
kind: Secret
metadata: {name: good}
stringData: {key: sk-good-key-0001}
"""


def resolve(*texts: str) -> Resolution:
    resolver = ManifestResolver()
    sources = [(f"doc{index}.yaml", text) for index, text in enumerate(texts)]
    return resolver.resolve(resolver.parse(sources))


class ListSink:
    """A policy sink that remembers what it was given."""

    def __init__(self) -> None:
        self.policies: list[ResolvedPolicy] = []

    async def put_policy(self, policy: ResolvedPolicy) -> bool:
        self.policies.append(policy)
        return True

    async def delete_policy(self, key_hash: str) -> None:
        raise AssertionError(key_hash)


@pytest.mark.parametrize("case", hostile_params())
def test_a_hostile_object_is_a_problem_naming_its_file_and_field(case: HostileCase) -> None:
    hostile = json.dumps(case.manifest("hostile"))
    resolution = resolve(GOOD_KEY, hostile)

    named = [problem for problem in resolution.problems if "hostile" in problem.subject]
    assert named, resolution.problems
    assert any(case.field in f"{problem.field} {problem.message}" for problem in named)
    assert all(problem.source == "doc1.yaml" for problem in named)
    assert [policy.key_name for policy in resolution.policies.values()] == ["good"]


def test_an_api_key_binds_only_to_a_team_of_its_own_namespace() -> None:
    other_team = """
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: qa, namespace: other}
spec: {budget: {maxBudget: 1000}}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: intruder, namespace: mine}
spec: {team: qa}
---
apiVersion: v1
kind: Secret
metadata: {name: intruder, namespace: mine}
stringData: {key: sk-intruder-0001}
"""
    resolution = resolve(other_team)
    assert resolution.policies == {}
    (problem,) = resolution.problems
    assert problem.subject == str(ObjectId("ApiKey", "mine", "intruder"))
    assert problem.field == "spec.team"


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
SPEC_FIELDS = st.sampled_from(
    ["maxBudget", "softBudget", "budgetDuration", "modelMaxBudget", "budget", "budgetRef",
     "rateLimit", "rateLimitRef", "rpm", "tpm", "maxParallelRequests", "allocation",
     "priorityReservation", "members", "models", "team", "user", "secretName", "expires",
     "blocked", "priority", "endUserBudgetRef"]
)  # fmt: skip
DOCUMENTS = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["llmquota.dev/v1alpha1", "llmquota.dev/v9", "v1"]),
        "kind": st.sampled_from(["Budget", "RateLimit", "Team", "ApiKey", "Secret"]),
        "metadata": st.one_of(
            st.fixed_dictionaries({"name": st.text(min_size=1, max_size=20)}), JSON_VALUES
        ),
        "spec": st.one_of(st.dictionaries(SPEC_FIELDS, JSON_VALUES, max_size=5), JSON_VALUES),
        "stringData": JSON_VALUES,
        "data": JSON_VALUES,
    }
)


@settings(max_examples=300, deadline=None)
@given(documents=st.lists(DOCUMENTS, max_size=4), raw=st.text(max_size=200))
def test_the_loader_never_raises_and_keeps_good_keys(
    documents: list[dict[str, object]], raw: str
) -> None:
    texts = [GOOD_KEY, yaml.safe_dump_all(documents), raw]
    resolution = resolve(*texts)
    assert any(policy.key_name == "good" for policy in resolution.policies.values())
