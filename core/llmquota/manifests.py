"""Standalone mode: the same YAML one would `kubectl apply`, read from a directory.

Without Kubernetes there is no operator to resolve ApiKeys into policies, so the sidecar
does it from `--manifests DIR`. The work is split so most of it is pure and testable:

- `parse_manifests` turns YAML texts into validated resources and key values (from
  `Secret` manifests), collecting a `ManifestProblem` for each bad document instead of
  failing, so that every mistake of a folder is reported at once, each naming the file,
  the object and the field.
- `ManifestResolver.resolve` turns such a set into one `ResolvedPolicy` per key hash,
  with the cross-object checks the operator makes (references, a key's models within its
  team's, the global budget), remembering what it resolved last time so that the caller
  can delete policies whose ApiKey went away. The caller decides what a problem means:
  the sidecar refuses to start on one, and keeps its last good policies (turning
  not-ready) when an edit brings one; `llmquota check` prints them.
- A manifest without `metadata.creationTimestamp` has no creation time to cut its
  windows from; `ManifestSet.anchored` fills in the time the manifest was first loaded,
  which the caller keeps in the store so that every replica agrees.
- `read_manifest_dir` and `watch_manifest_dir` are the only file I/O; `apply_resolution`
  writes to anything shaped like a store (`PolicySink`), since this layer may not import
  the store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from pydantic import ValidationError

from llmquota.models import (
    API_GROUP,
    ApiKey,
    Budget,
    BudgetOverride,
    RateLimit,
    Team,
    parse_resource,
)
from llmquota.models.registry import RESOURCE_KINDS, AnyResource
from llmquota.policy.identity import WorkloadPolicy
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.policy.resolve import (
    NamespaceObjects,
    ResolutionError,
    resolve_key_policy,
    resolve_workload_policy,
)

__all__ = [
    "MANIFEST_SUFFIXES",
    "POLL_INTERVAL_S",
    "ManifestFiles",
    "ManifestProblem",
    "ManifestResolver",
    "ManifestSet",
    "ObjectId",
    "PolicySink",
    "Resolution",
    "apply_resolution",
    "check_manifest_dir",
    "parse_global_budget_ref",
    "parse_manifests",
    "read_manifest_dir",
    "watch_manifest_dir",
]

DEFAULT_NAMESPACE = "default"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
POLL_INTERVAL_S = 0.5
KEY_DATA_NAME = "key"
# What the API server accepts as an object's name and as a namespace (RFC 1123).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_NAMESPACE = re.compile(rf"^{_LABEL}$")

ResourceT = TypeVar("ResourceT", Team, ApiKey, Budget, RateLimit, BudgetOverride)


@dataclass(frozen=True, slots=True, order=True)
class ObjectId:
    """Which object a manifest describes: kind, namespace and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """A document or object that was skipped, and why, naming the field."""

    source: str  # file name (and document number)
    subject: str  # the object, e.g. "ApiKey default/qa-bot", or "" when unknown
    field: str
    message: str

    def __str__(self) -> str:
        where = " ".join(part for part in (self.source, self.subject) if part)
        return f"{where}: {self.field}: {self.message}"


@dataclass(slots=True)
class ManifestSet:
    """Valid llmquota resources and Secret key values found in a set of manifests."""

    resources: dict[ObjectId, AnyResource] = field(default_factory=dict)
    secret_keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, name) -> key
    problems: list[ManifestProblem] = field(default_factory=list)
    sources: dict[ObjectId, str] = field(default_factory=dict)  # where each object is written

    def of_kind(self, kind: type[ResourceT]) -> dict[ObjectId, ResourceT]:
        """The resources of one kind, by id."""
        return {oid: obj for oid, obj in self.resources.items() if isinstance(obj, kind)}

    def unanchored(self) -> list[ObjectId]:
        """The resources without `metadata.creationTimestamp`, whose windows need a time
        to be cut from."""
        return sorted(
            oid for oid, obj in self.resources.items() if obj.metadata.creation_timestamp is None
        )

    def anchored(self, created: Mapping[ObjectId, datetime]) -> ManifestSet:
        """This set with `created[oid]` as the creation time of each resource that has
        none (the time the manifest was first loaded)."""
        resources: dict[ObjectId, AnyResource] = {}
        for oid, obj in self.resources.items():
            when = created.get(oid)
            if obj.metadata.creation_timestamp is None and when is not None:
                metadata = obj.metadata.model_copy(update={"creation_timestamp": when})
                obj = obj.model_copy(update={"metadata": metadata})  # noqa: PLW2901
            resources[oid] = obj
        return replace(self, resources=resources)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the line: in a Secret that line
    may hold the key, and problems are logged."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def _documents(source: str, text: str, problems: list[ManifestProblem]) -> list[tuple[str, Any]]:
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        problems.append(ManifestProblem(source, "", "yaml", _yaml_problem(error)))
        return []
    many = len(loaded) > 1
    return [
        (f"{source}#{number}" if many else source, document)  # #1: the first document
        for number, document in enumerate(loaded, start=1)
        if document is not None
    ]


def _fields_of(error: ValidationError) -> list[tuple[str, str]]:
    """Each failing field as a dotted path (camelCase as written) and its message."""
    return [
        (
            ".".join(str(part) for part in detail["loc"]) or "(document)",
            detail["msg"].removeprefix("Value error, "),
        )
        for detail in error.errors()
    ]


def _secret_key(document: Mapping[str, Any]) -> str | None:
    """`stringData.key`, else base64-decoded `data.key`; raises ValueError when unusable."""
    string_data = document.get("stringData") or {}
    data = document.get("data") or {}
    if not isinstance(string_data, Mapping) or not isinstance(data, Mapping):
        raise ValueError("data and stringData must be mappings")
    if KEY_DATA_NAME in string_data:
        return str(string_data[KEY_DATA_NAME]).strip()
    if KEY_DATA_NAME in data:
        try:
            return base64.b64decode(str(data[KEY_DATA_NAME]), validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise ValueError(f"data.key is not base64 of UTF-8 text: {error}") from error
    return None


def _metadata(document: Mapping[str, Any]) -> tuple[str, str] | tuple[str, str, str]:
    """`(namespace, name)`, or `(field, message, subject)` naming what is wrong."""
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        return "metadata.name", "is required", str(document.get("kind"))
    name = metadata["name"]
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    subject = f"{document.get('kind')} {namespace}/{name}"
    if not isinstance(namespace, str) or len(namespace) > 63 or not _NAMESPACE.match(namespace):
        return "metadata.namespace", "must be a DNS label: lower case a-z, 0-9 and -", subject
    if len(name) > 253 or not _NAME.match(name):
        return "metadata.name", "must be lower case a-z, 0-9, - and . (RFC 1123)", subject
    return namespace, name


def _in_namespace(document: Mapping[str, Any], object_id: ObjectId) -> dict[str, Any]:
    """The document with its namespace filled in (`default` when it names none)."""
    return {**document, "metadata": {**document["metadata"], "namespace": object_id.namespace}}


def parse_manifests(texts: Iterable[tuple[str, str]]) -> ManifestSet:
    """Validate every document of every `(source, yaml_text)`; never raises.

    Kinds other than llmquota's and `Secret` (a ConfigMap next to them, say) are ignored.
    """
    found = ManifestSet()
    for source, text in texts:
        for where, document in _documents(source, text, found.problems):
            _parse_document(where, document, found)
    return found


def _parse_document(where: str, document: Any, found: ManifestSet) -> None:
    if not isinstance(document, Mapping):
        found.problems.append(ManifestProblem(where, "", "(document)", "not a mapping"))
        return
    kind = document.get("kind")
    if kind != "Secret" and kind not in RESOURCE_KINDS:
        if str(document.get("apiVersion", "")).startswith(f"{API_GROUP}/"):
            kinds = ", ".join(RESOURCE_KINDS)
            message = f"{kind!r} is not a kind of {API_GROUP} ({kinds})"
            found.problems.append(ManifestProblem(where, "", "kind", message))
        return
    names = _metadata(document)
    if len(names) == 3:
        found.problems.append(ManifestProblem(where, names[2], names[0], names[1]))
        return
    object_id = ObjectId(str(kind), *names)
    if object_id in found.sources:
        first = found.sources[object_id]
        found.problems.append(
            ManifestProblem(where, str(object_id), "metadata.name", f"also defined in {first}")
        )
        return
    found.sources[object_id] = where
    if kind == "Secret":
        try:
            key = _secret_key(document)
        except ValueError as error:
            found.problems.append(ManifestProblem(where, str(object_id), "data.key", str(error)))
            return
        if key:
            found.secret_keys[names] = key
        return
    try:
        found.resources[object_id] = parse_resource(_in_namespace(document, object_id))
    except ValidationError as error:
        for path, message in _fields_of(error):
            found.problems.append(ManifestProblem(where, str(object_id), path, message))
    except ValueError as error:
        found.problems.append(ManifestProblem(where, str(object_id), "apiVersion", str(error)))


def parse_global_budget_ref(text: str | None) -> ObjectId | None:
    """`--global-budget NAMESPACE/NAME` (NAME alone: namespace default)."""
    if not text:
        return None
    namespace, _, name = text.rpartition("/")
    if not name:
        msg = f"--global-budget must be NAMESPACE/NAME, got {text!r}"
        raise ValueError(msg)
    return ObjectId("Budget", namespace or DEFAULT_NAMESPACE, name)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What to write: the current policies, the hashes to delete, what was skipped."""

    policies: dict[str, ResolvedPolicy]
    removed: set[str]
    problems: list[ManifestProblem]
    workload_policies: list[WorkloadPolicy] = field(default_factory=list)
    """One per Team with a workloadSelector (keyless requests, docs/keyless.md)."""


class ManifestResolver:
    """Resolves successive manifest sets, remembering what it last wrote."""

    def __init__(self, global_budget: ObjectId | None = None) -> None:
        """`global_budget`: a Budget every key's requests also count against."""
        self.global_budget = global_budget
        self._written: set[str] = set()

    def parse(self, texts: Iterable[tuple[str, str]]) -> ManifestSet:
        """`parse_manifests`, for callers that hold a resolver."""
        return parse_manifests(texts)

    def resolve(self, manifests: ManifestSet) -> Resolution:
        """One policy per ApiKey that has a key and resolves; the rest are problems.

        The policies are what a folder with problems would still give; a caller that
        wants all or nothing (the sidecar) applies them only when there are none.
        """
        problems = list(manifests.problems)
        global_budget = self._global_budget(manifests, problems)
        teams = manifests.of_kind(Team)
        policies: dict[str, ResolvedPolicy] = {}
        owners: dict[str, ObjectId] = {}
        for object_id, key in sorted(manifests.of_kind(ApiKey).items()):
            namespace = object_id.namespace
            secret_name = key.spec.secret_name or key.metadata.name
            key_value = manifests.secret_keys.get((namespace, secret_name))
            source = manifests.sources.get(object_id, "")
            if key_value is None:
                problems.append(
                    ManifestProblem(
                        source,
                        str(object_id),
                        "spec.secretName",
                        f"no Secret {namespace}/{secret_name} with stringData.key or data.key",
                    )
                )
                continue
            key_hash = hash_key(key_value)
            if key_hash in owners:
                problems.append(
                    ManifestProblem(
                        source,
                        str(object_id),
                        "spec.secretName",
                        f"same key as {owners[key_hash]}",
                    )
                )
                continue
            objects = _namespace_objects(manifests, namespace)
            team = (
                None
                if key.spec.team is None
                else teams.get(ObjectId("Team", namespace, key.spec.team))
            )
            invalid = _invalid_reference(key, team, manifests)
            if invalid is not None:
                problems.append(ManifestProblem(source, str(object_id), *invalid))
                continue
            try:
                policies[key_hash] = resolve_key_policy(key, key_hash, team, objects, global_budget)
            except ResolutionError as error:
                problems.append(ManifestProblem(source, str(object_id), error.field, error.message))
                continue
            owners[key_hash] = object_id
        workload_policies = _workload_policies(manifests, global_budget, problems)
        removed = self._written - set(policies)
        if not problems:  # a folder with problems is not applied: the last good one stands
            self._written = set(policies)
        return Resolution(
            policies=policies,
            removed=removed,
            problems=problems,
            workload_policies=workload_policies,
        )

    def _global_budget(
        self, manifests: ManifestSet, problems: list[ManifestProblem]
    ) -> Budget | None:
        if self.global_budget is None:
            return None
        budget = manifests.of_kind(Budget).get(self.global_budget)
        if budget is None:
            problems.append(
                ManifestProblem(
                    "--global-budget",
                    str(self.global_budget),
                    "metadata.name",
                    "no such Budget in the manifests",
                )
            )
        return budget


def _namespace_objects(manifests: ManifestSet, namespace: str) -> NamespaceObjects:
    """The Budgets, RateLimits and BudgetOverrides of one namespace of the folder."""
    return NamespaceObjects(
        budgets={
            oid.name: b
            for oid, b in manifests.of_kind(Budget).items()
            if oid.namespace == namespace
        },
        rate_limits={
            oid.name: r
            for oid, r in manifests.of_kind(RateLimit).items()
            if oid.namespace == namespace
        },
        overrides=[
            o for oid, o in manifests.of_kind(BudgetOverride).items() if oid.namespace == namespace
        ],
    )


def _workload_policies(
    manifests: ManifestSet, global_budget: Budget | None, problems: list[ManifestProblem]
) -> list[WorkloadPolicy]:
    """The workload policies of the folder's Teams; what does not resolve is a problem."""
    found: list[WorkloadPolicy] = []
    for object_id, team in sorted(manifests.of_kind(Team).items()):
        objects = _namespace_objects(manifests, object_id.namespace)
        try:
            policy = resolve_workload_policy(team, objects, global_budget)
        except ResolutionError as error:
            source = manifests.sources.get(object_id, "")
            problems.append(ManifestProblem(source, str(object_id), error.field, error.message))
            continue
        if policy is not None:
            found.append(policy)
    return found


_REFERENCES = (
    ("budget_ref", "spec.budgetRef", "Budget"),
    ("rate_limit_ref", "spec.rateLimitRef", "RateLimit"),
    ("end_user_budget_ref", "spec.endUserBudgetRef", "Budget"),
    ("end_user_rate_limit_ref", "spec.endUserRateLimitRef", "RateLimit"),
)


def _invalid_reference(
    key: ApiKey, team: Team | None, manifests: ManifestSet
) -> tuple[str, str] | None:
    """`(field, message)` when the key refers, itself or through its team, to an object
    that is in the folder but invalid: its own problem says why, and "not found" would
    send the reader looking for a missing file."""
    namespace = key.metadata.namespace
    referenced = [("spec.team", ObjectId("Team", namespace, key.spec.team or ""))]
    for spec in (key.spec, None if team is None else team.spec):
        for attribute, field_path, kind in _REFERENCES:
            ref = None if spec is None else getattr(spec, attribute)
            if ref is not None:
                referenced.append((field_path, ObjectId(kind, namespace, ref.name)))
    for field_path, object_id in referenced:
        if object_id in manifests.sources and object_id not in manifests.resources:
            return field_path, f"{object_id} is invalid (its own problem is listed)"
    return None


class PolicySink(Protocol):
    """Where resolved policies go: the store (structurally; this layer cannot import it)."""

    async def put_policy(self, policy: ResolvedPolicy) -> bool:
        """Write one policy; True when it changed."""

    async def delete_policy(self, key_hash: str) -> None:
        """Remove one policy."""


async def apply_resolution(sink: PolicySink, resolution: Resolution) -> int:
    """Write changed policies and delete removed ones; how many changed."""
    changed = 0
    for policy in resolution.policies.values():
        changed += await sink.put_policy(policy)
    for key_hash in resolution.removed:
        await sink.delete_policy(key_hash)
    return changed + len(resolution.removed)


def _manifest_files(directory: Path) -> list[Path]:
    """Manifest files, skipping hidden paths: a mounted ConfigMap keeps the real files in
    `..data/` and links them from the top, so each would otherwise be read twice."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix in MANIFEST_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
        and path.is_file()
    )


@dataclass(frozen=True, slots=True)
class ManifestFiles:
    """The texts of a directory's manifest files, and the files that could not be read."""

    texts: list[tuple[str, str]]  # (path relative to the directory, text), in name order
    problems: list[ManifestProblem]

    def parse(self) -> ManifestSet:
        """`parse_manifests` over the texts, with the unreadable files as problems."""
        found = parse_manifests(self.texts)
        found.problems[:0] = self.problems
        return found


def read_manifest_dir(directory: Path) -> ManifestFiles:
    """Every manifest file under `directory`, in name order."""
    if not directory.is_dir():
        problem = ManifestProblem(str(directory), "", "(directory)", "is not a directory")
        return ManifestFiles([], [problem])
    texts, problems = [], []
    for path in _manifest_files(directory):
        source = str(path.relative_to(directory))
        try:
            texts.append((source, path.read_text()))
        except (OSError, UnicodeDecodeError) as error:
            problems.append(ManifestProblem(source, "", "(file)", f"unreadable: {error}"))
    return ManifestFiles(texts, problems)


def check_manifest_dir(directory: Path, global_budget: ObjectId | None) -> Resolution:
    """The folder resolved as the sidecar would load it: its policies and every problem."""
    return ManifestResolver(global_budget).resolve(read_manifest_dir(directory).parse())


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, mtimes and sizes: changes when a file is edited, added or removed."""
    stamps = []
    for path in _manifest_files(directory):
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


async def watch_manifest_dir(
    directory: Path, interval_s: float = POLL_INTERVAL_S
) -> AsyncGenerator[ManifestFiles, None]:
    """The directory's manifests now, then again each time a file changes.

    Polling mtimes needs no extra dependency and works on mounted ConfigMaps, whose
    files change by symlink swaps that inotify watchers often miss.
    """
    last = await asyncio.to_thread(_fingerprint, directory)
    yield await asyncio.to_thread(read_manifest_dir, directory)
    while True:
        await asyncio.sleep(interval_s)
        current = await asyncio.to_thread(_fingerprint, directory)
        if current != last:
            last = current
            yield await asyncio.to_thread(read_manifest_dir, directory)
