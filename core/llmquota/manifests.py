"""Standalone mode: the same YAML one would `kubectl apply`, read from a directory.

Without Kubernetes there is no operator to resolve ApiKeys into policies, so the sidecar
does it from `--manifests DIR`. The work is split so most of it is pure and testable:

- `parse_manifests` turns YAML texts into validated resources and key values (from
  `Secret` manifests), collecting a `ManifestProblem` for each bad document instead of
  failing: one typo must not take every other key down.
- `ManifestResolver.resolve` turns such a set into one `ResolvedPolicy` per key hash,
  remembering what it resolved last time so that the caller can delete policies whose
  ApiKey went away. A manifest has no `creationTimestamp` to anchor budget windows at,
  so its windows align to the UTC clock (anchor: the Unix epoch; a `1d` budget resets
  at 00:00 UTC): the same on every sidecar and across restarts, with nothing to agree on.
- `read_manifest_dir` and `watch_manifest_dir` are the only file I/O; `apply_resolution`
  writes to anything shaped like a store (`PolicySink`), since this layer may not import
  the store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from pydantic import ValidationError

from llmquota.models import ApiKey, Budget, BudgetOverride, RateLimit, Team, parse_resource
from llmquota.models.registry import RESOURCE_KINDS, AnyResource
from llmquota.policy.key_hash import hash_key
from llmquota.policy.resolve import NamespaceObjects, ResolutionError, resolve_key_policy
from llmquota.policy.resolved import ResolvedPolicy

__all__ = [
    "MANIFEST_SUFFIXES",
    "POLL_INTERVAL_S",
    "ManifestProblem",
    "ManifestResolver",
    "ManifestSet",
    "ObjectId",
    "PolicySink",
    "Resolution",
    "apply_resolution",
    "parse_global_budget_ref",
    "parse_manifests",
    "read_manifest_dir",
    "watch_manifest_dir",
]

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "default"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
POLL_INTERVAL_S = 0.5
KEY_DATA_NAME = "key"

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

    def of_kind(self, kind: type[ResourceT]) -> dict[ObjectId, ResourceT]:
        """The resources of one kind, by id."""
        return {oid: obj for oid, obj in self.resources.items() if isinstance(obj, kind)}


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
        (f"{source}#{index}" if many else source, document)
        for index, document in enumerate(loaded)
        if document is not None
    ]


def _field_of(error: ValidationError) -> tuple[str, str]:
    """The first failing field as a dotted path (camelCase as written) and its message."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"]) or "(document)"
    return path, first["msg"]


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


def _metadata(document: Mapping[str, Any]) -> tuple[str, str] | None:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        return None
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    return str(namespace), metadata["name"]


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
        return
    names = _metadata(document)
    if names is None:
        found.problems.append(ManifestProblem(where, str(kind), "metadata.name", "is required"))
        return
    object_id = ObjectId(str(kind), *names)
    if object_id in found.resources or (kind == "Secret" and names in found.secret_keys):
        found.problems.append(
            ManifestProblem(where, str(object_id), "metadata.name", "defined twice; last wins")
        )
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
        path, message = _field_of(error)
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
        """One policy per ApiKey that has a key and resolves; the rest are problems."""
        problems = list(manifests.problems)
        global_budget = self._global_budget(manifests, problems)
        budgets = manifests.of_kind(Budget)
        rate_limits = manifests.of_kind(RateLimit)
        overrides = manifests.of_kind(BudgetOverride)
        teams = manifests.of_kind(Team)
        policies: dict[str, ResolvedPolicy] = {}
        owners: dict[str, ObjectId] = {}
        for object_id, key in sorted(manifests.of_kind(ApiKey).items()):
            namespace = object_id.namespace
            secret_name = key.spec.secret_name or key.metadata.name
            key_value = manifests.secret_keys.get((namespace, secret_name))
            if key_value is None:
                problems.append(
                    ManifestProblem(
                        "",
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
                        "",
                        str(object_id),
                        "spec.secretName",
                        f"same key as {owners[key_hash]}; skipped",
                    )
                )
                continue
            objects = NamespaceObjects(
                budgets={oid.name: b for oid, b in budgets.items() if oid.namespace == namespace},
                rate_limits={
                    oid.name: r for oid, r in rate_limits.items() if oid.namespace == namespace
                },
                overrides=[o for oid, o in overrides.items() if oid.namespace == namespace],
            )
            team = (
                None
                if key.spec.team is None
                else teams.get(ObjectId("Team", namespace, key.spec.team))
            )
            try:
                policies[key_hash] = resolve_key_policy(key, key_hash, team, objects, global_budget)
            except ResolutionError as error:
                problems.append(ManifestProblem("", str(object_id), error.field, error.message))
                continue
            owners[key_hash] = object_id
        removed = self._written - set(policies)
        self._written = set(policies)
        return Resolution(policies=policies, removed=removed, problems=problems)

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
                    "no such Budget in the manifests; keys are resolved without it",
                )
            )
        return budget


class PolicySink(Protocol):
    """Where resolved policies go: the store (structurally; this layer cannot import it)."""

    async def put_policy(self, policy: ResolvedPolicy) -> bool:
        """Write one policy; True when it changed."""

    async def delete_policy(self, key_hash: str) -> None:
        """Remove one policy."""


async def apply_resolution(sink: PolicySink, resolution: Resolution) -> int:
    """Write changed policies, delete removed ones, log problems; how many changed."""
    for problem in resolution.problems:
        logger.warning("manifest skipped: %s", problem)
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


def read_manifest_dir(directory: Path) -> list[tuple[str, str]]:
    """`(relative path, text)` of every manifest file under `directory`, in name order."""
    texts = []
    for path in _manifest_files(directory):
        try:
            texts.append((str(path.relative_to(directory)), path.read_text()))
        except (OSError, UnicodeDecodeError) as error:
            logger.warning("manifest file %s unreadable: %s", path, error)
    return texts


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
) -> AsyncGenerator[list[tuple[str, str]], None]:
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
