"""Standalone manifests: parsing, Secrets, anchors, resolution and skipped resources."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmquota.manifests import (
    ManifestResolver,
    ObjectId,
    Resolution,
    apply_resolution,
    parse_global_budget_ref,
    read_manifest_dir,
    watch_manifest_dir,
)
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

SEED = """
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: qa-prod-bot}
spec:
  budget: {maxBudget: 0.000000001, budgetDuration: 1d}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: qa-bot}
spec:
  team: qa-prod-bot
---
apiVersion: v1
kind: Secret
metadata: {name: qa-bot}
stringData: {key: sk-qa-bot-0001}
"""


def resolve(*texts: str, resolver: ManifestResolver | None = None) -> Resolution:
    resolver = resolver or ManifestResolver()
    sources = [(f"file{index}.yaml", text) for index, text in enumerate(texts)]
    return resolver.resolve(resolver.parse(sources))


def test_seed_manifests_resolve_with_default_namespace_and_team_budget() -> None:
    resolution = resolve(SEED)
    assert resolution.problems == []
    policy = resolution.policies[hash_key("sk-qa-bot-0001")]
    assert policy.namespace == "default"
    assert policy.team == "qa-prod-bot"
    team_scope = next(scope for scope in policy.scopes if scope.kind == "team")
    assert team_scope.budget is not None
    assert team_scope.budget.max_nanos == 1
    assert team_scope.budget.anchor_ms == 0  # no creationTimestamp: aligned to the UTC clock


def test_secret_data_key_is_base64_and_secret_name_is_followed() -> None:
    encoded = base64.b64encode(b"sk-other-key").decode()
    text = f"""
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: bot, namespace: ml}}
spec: {{secretName: bot-secret}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bot-secret, namespace: ml}}
data: {{key: {encoded}}}
"""
    resolution = resolve(text)
    assert resolution.problems == []
    assert resolution.policies[hash_key("sk-other-key")].namespace == "ml"


def test_invalid_resource_is_skipped_with_the_field_named() -> None:
    bad = """
apiVersion: llmquota.dev/v1alpha1
kind: Budget
metadata: {name: tier}
spec: {maxBudgt: 3}
"""
    resolution = resolve(SEED, bad)
    assert len(resolution.policies) == 1
    named = sorted(str(problem) for problem in resolution.problems)
    assert named == [
        "file1.yaml Budget default/tier: spec.maxBudget: Field required",
        "file1.yaml Budget default/tier: spec.maxBudgt: Extra inputs are not permitted",
    ]


def test_dangling_reference_and_missing_secret_are_problems_not_crashes() -> None:
    text = """
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: a}
spec: {budgetRef: {name: nowhere}}
---
apiVersion: v1
kind: Secret
metadata: {name: a}
stringData: {key: sk-a}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: b}
spec: {}
"""
    resolution = resolve(text)
    assert resolution.policies == {}
    fields = sorted((problem.subject, problem.field) for problem in resolution.problems)
    assert fields == [
        ("ApiKey default/a", "spec.budgetRef"),
        ("ApiKey default/b", "spec.secretName"),
    ]


def test_broken_yaml_and_foreign_kinds_do_not_stop_the_rest() -> None:
    foreign = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {}\n"
    resolution = resolve(SEED, "key: [unclosed", foreign)
    assert len(resolution.policies) == 1
    [problem] = resolution.problems
    assert problem.field == "yaml"


def test_reloads_are_stable_and_removed_keys_are_reported() -> None:
    resolver = ManifestResolver()
    first = resolve(SEED, resolver=resolver)
    later = resolve(SEED, resolver=resolver)
    assert first.policies == later.policies
    assert later.removed == set()
    gone = resolve("", resolver=resolver)
    assert gone.removed == {hash_key("sk-qa-bot-0001")}


def test_windows_without_creation_timestamp_align_to_the_utc_clock() -> None:
    """Every sidecar (and every restart) must cut the same windows from the same manifest."""
    one, other = resolve(SEED).policies, resolve(SEED, resolver=ManifestResolver()).policies
    assert one == other
    [policy] = one.values()
    assert policy.scopes[0].budget is not None
    assert policy.scopes[0].budget.anchor_ms == 0


def test_explicit_creation_timestamp_wins() -> None:
    text = SEED.replace(
        "metadata: {name: qa-prod-bot}",
        ("metadata: {name: qa-prod-bot, creationTimestamp: '2026-01-01T00:00:00Z'}"),
    )
    policy = next(iter(resolve(text).policies.values()))
    assert policy.scopes[0].budget is not None
    assert policy.scopes[0].budget.anchor_ms == int(
        datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000
    )


def test_global_budget_applies_and_missing_one_is_a_problem() -> None:
    budget = """
---
apiVersion: llmquota.dev/v1alpha1
kind: Budget
metadata: {name: everything, namespace: ops}
spec: {maxBudget: 100}
"""
    ref = parse_global_budget_ref("ops/everything")
    resolution = resolve(SEED + budget, resolver=ManifestResolver(ref))
    policy = next(iter(resolution.policies.values()))
    assert policy.scopes[0].kind == "global"
    missing = resolve(SEED, resolver=ManifestResolver(ObjectId("Budget", "ops", "nope")))
    assert [str(problem) for problem in missing.problems] == [
        "--global-budget Budget ops/nope: metadata.name: no such Budget in the manifests"
    ]


def test_global_budget_ref_parsing() -> None:
    assert parse_global_budget_ref(None) is None
    assert parse_global_budget_ref("tier") == ObjectId("Budget", "default", "tier")
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        parse_global_budget_ref("ops/")


def test_duplicate_keys_are_refused_for_the_second_apikey() -> None:
    twin = SEED.replace("name: qa-bot}", "name: qa-bot-2}").split("---")[1]
    twin_secret = """
apiVersion: v1
kind: Secret
metadata: {name: qa-bot-2}
stringData: {key: sk-qa-bot-0001}
"""
    resolution = resolve(SEED, twin, twin_secret)
    assert len(resolution.policies) == 1
    assert [str(problem) for problem in resolution.problems] == [
        "file1.yaml ApiKey default/qa-bot-2: spec.secretName: same key as ApiKey default/qa-bot"
    ]


class RecordingSink:
    def __init__(self) -> None:
        self.policies: dict[str, ResolvedPolicy] = {}

    async def put_policy(self, policy: ResolvedPolicy) -> bool:
        changed = self.policies.get(policy.key_hash) != policy
        self.policies[policy.key_hash] = policy
        return changed

    async def delete_policy(self, key_hash: str) -> None:
        self.policies.pop(key_hash, None)


async def test_apply_writes_changes_and_deletes_what_went_away() -> None:
    sink = RecordingSink()
    resolver = ManifestResolver()
    assert await apply_resolution(sink, resolve(SEED, resolver=resolver)) == 1
    assert await apply_resolution(sink, resolve(SEED, resolver=resolver)) == 0
    assert await apply_resolution(sink, resolve("", resolver=resolver)) == 1
    assert sink.policies == {}


async def test_directory_is_read_and_watched(tmp_path: Path) -> None:
    (tmp_path / "seed.yaml").write_text(SEED)
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "seed.yaml").write_text(SEED)
    assert [source for source, _ in read_manifest_dir(tmp_path).texts] == ["seed.yaml"]
    snapshots = watch_manifest_dir(tmp_path, interval_s=0.01)
    first = await anext(snapshots)
    assert len(first.texts) == 1
    (tmp_path / "more.yml").write_text("kind: Nothing\n")
    second = await asyncio.wait_for(anext(snapshots), timeout=2)
    assert [source for source, _ in second.texts] == ["more.yml", "seed.yaml"]
    await snapshots.aclose()


def test_problems_name_the_file_the_object_is_written_in() -> None:
    """A dangling reference or a key outside its team's models names where to look."""
    text = SEED.replace("team: qa-prod-bot", "team: qa-prod-bot\n  models: [gpt-4o]").replace(
        "budget: {maxBudget: 0.000000001, budgetDuration: 1d}",
        "budget: {maxBudget: 1}\n  models: [gpt-4o-mini]",
    )
    team, key, secret = text.split("---")
    (problem,) = resolve(secret, team + "---" + key).problems
    assert str(problem).startswith("file1.yaml#2 ApiKey default/qa-bot: spec.models: gpt-4o ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "apiVersion: llmquota.dev/v1alpha1\nkind: Budgett\nmetadata: {name: x}\n",
            "file0.yaml: kind: 'Budgett' is not a kind of llmquota.dev (Team, ApiKey, Budget, "
            "RateLimit, BudgetOverride)",
            id="unknown-kind",
        ),
        pytest.param(
            "apiVersion: llmquota.dev/v1alpha1\nkind: Budget\nmetadata: {name: Tier_1}\n"
            "spec: {maxBudget: 1}\n",
            "file0.yaml Budget default/Tier_1: metadata.name: must be lower case a-z, 0-9, - and . "
            "(RFC 1123)",
            id="bad-name",
        ),
        pytest.param(
            "apiVersion: llmquota.dev/v1alpha1\nkind: Budget\nmetadata: {name: t, namespace: A}\n"
            "spec: {maxBudget: 1}\n",
            "file0.yaml Budget A/t: metadata.namespace: must be a DNS label: lower case a-z, 0-9 "
            "and -",
            id="bad-namespace",
        ),
    ],
)
def test_what_the_api_server_would_refuse_is_a_problem(text: str, expected: str) -> None:
    assert [str(problem) for problem in resolve(text).problems] == [expected]


def test_an_object_defined_twice_names_both_files() -> None:
    resolution = resolve(SEED, SEED.split("---", maxsplit=1)[0])
    assert [str(problem) for problem in resolution.problems] == [
        "file1.yaml Team default/qa-prod-bot: metadata.name: also defined in file0.yaml#1"
    ]


def test_a_folder_with_problems_does_not_move_what_was_last_written() -> None:
    """The sidecar keeps the last good policies: the next good folder's removals are
    computed from them, not from the bad folder's partial resolution."""
    resolver = ManifestResolver()
    resolve(SEED, resolver=resolver)
    broken = resolve("key: [unclosed", resolver=resolver)
    assert broken.problems
    fixed = resolve("", resolver=resolver)
    assert fixed.removed == {hash_key("sk-qa-bot-0001")}


def test_unanchored_objects_get_their_first_load_time() -> None:
    resolver = ManifestResolver()
    manifests = resolver.parse([("seed.yaml", SEED)])
    assert [str(oid) for oid in manifests.unanchored()] == [
        "ApiKey default/qa-bot",
        "Team default/qa-prod-bot",
    ]
    anchored = manifests.anchored(dict.fromkeys(manifests.unanchored(), NOW))
    assert anchored.unanchored() == []
    (policy,) = resolver.resolve(anchored).policies.values()
    windowed = [
        scope.budget for scope in policy.scopes if scope.budget and scope.budget.window != "none"
    ]
    assert {budget.anchor_ms for budget in windowed} == {int(NOW.timestamp() * 1000)}
