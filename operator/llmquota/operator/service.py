"""The operator's work, called by the thin handlers: keys to policies, counters to statuses.

Every function here is idempotent: handlers, the status sync and the Secret watch may all call
the same one for the same object, in any order, and the last call wins.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from redis.exceptions import RedisError

from llmquota.models import ApiKey, Budget, BudgetOverride, RateLimit, Team
from llmquota.operator.conditions import Observation, Transition, event_for
from llmquota.operator.dependents import (
    DependencyKind,
    keys_affected,
    keys_to_reresolve,
    subjects_referencing,
)
from llmquota.operator.keys import (
    KEY_FIELD,
    generate_key,
    key_from_secret,
    owned_secret,
    secret_name_of,
)
from llmquota.operator.state import Gone, KeyRecord, OperatorState
from llmquota.operator.status_view import (
    key_state_observations,
    status_patch,
)
from llmquota.operator.team_view import (
    check_team_refs,
)
from llmquota.policy.key_hash import hash_key, key_hint
from llmquota.policy.limits import PolicyRefusal, ResolvedPolicy
from llmquota.policy.resolve import ResolutionError, resolve_key_policy

__all__ = [
    "REFRESH_CONCURRENCY",
    "DependencyKind",
    "KeyOutcome",
    "apply_key",
    "forget_key",
    "incomplete_policy",
    "key_observations",
    "key_status_fields",
    "object_ref",
    "post_event",
    "post_events",
    "ready_observation",
    "refresh_keys",
    "reresolve_dependents",
    "sync_reference_status",
    "team_ready",
    "tell",
    "update_status",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    """What reconciling an ApiKey found: its Ready condition and the key's hint."""

    ready: Observation
    key_hint: str | None


def object_ref(obj: ApiKey | Team | Budget | RateLimit) -> kopf.Body:
    """Enough of an object for kopf.event to post an Event about it."""
    raw = {
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "metadata": {
            "name": obj.metadata.name,
            "namespace": obj.metadata.namespace,
            "uid": obj.metadata.uid,
        },
    }
    return kopf.Body(cast("kopf.RawBody", raw))


def tell(body: kopf.Body, transitions: list[Transition]) -> None:
    """Post one Event per condition flip worth telling."""
    for transition in transitions:
        event = event_for(transition)
        if event is not None:
            kopf.event(body, type=event[0], reason=event[1], message=event[2])


async def post_events(
    state: OperatorState, obj: ApiKey | Team, transitions: list[Transition]
) -> None:
    """`tell` through the operator's own client, for code that runs outside a handler.

    `kopf.event` needs the context of the handler it is called from; a key refreshed on
    behalf of another object, or the status sync, has none. A lost Event is logged, not
    retried: the condition in the status says the same.
    """
    for transition in transitions:
        event = event_for(transition)
        if event is not None:
            await post_event(state, obj, *event)


async def post_event(
    state: OperatorState,
    obj: ApiKey | Team | BudgetOverride,
    type_: str,
    reason: str,
    message: str,
) -> None:
    """One Event about `obj` through the operator's own client (see `post_events`)."""
    try:
        involved = {
            "apiVersion": obj.api_version,
            "kind": obj.kind,
            "name": obj.metadata.name,
            "namespace": obj.metadata.namespace,
            "uid": obj.metadata.uid,
        }
        await state.kube.post_event(involved, type_, reason, message)
    except (ApiException, OSError) as error:
        logger.warning("Event %s about %s not posted: %s", reason, obj.metadata.name, error)


def update_status(
    state: OperatorState,
    uid: str | None,
    current: Mapping[str, Any],
    fields: Mapping[str, Any],
    observations: list[Observation],
    *,
    generation: int | None,
    now: datetime,
) -> tuple[dict[str, Any], list[Transition]]:
    """`status_patch` on top of the conditions this process last wrote for `uid`."""
    update = status_patch(
        current,
        fields,
        observations,
        generation=generation,
        now=now,
        known_conditions=state.conditions.get(uid) if uid else None,
    )
    if uid:
        state.conditions[uid] = update.conditions
    return update.patch, update.transitions


def ready_observation(error: ResolutionError | None, applied: str) -> Observation:
    """Ready=True with `applied` as message, or Ready=False naming the problem."""
    if error is None:
        return Observation("Ready", "True", "Applied", applied)
    return Observation("Ready", "False", error.reason, f"{error.field}: {error.message}")


async def _ensure_key(state: OperatorState, apikey: ApiKey) -> str:
    """The key in the ApiKey's Secret, generating one (in a Secret it owns) if absent."""
    namespace, name = apikey.metadata.namespace, apikey.metadata.name
    secret_name = secret_name_of(name, apikey.spec.model_dump(by_alias=True))
    secret = await state.kube.read_secret(namespace, secret_name)
    key = key_from_secret(secret)
    if key is not None:
        return key
    key = generate_key()
    if secret is None:
        body = owned_secret(
            name=secret_name, namespace=namespace, key=key, owner=object_ref(apikey)
        )
        if await state.kube.create_secret(body):
            return key
        # Someone created it meanwhile: theirs wins.
        existing = key_from_secret(await state.kube.read_secret(namespace, secret_name))
        if existing is not None:
            return existing
    encoded = base64.b64encode(key.encode()).decode()
    await state.kube.patch_secret_data(namespace, secret_name, {KEY_FIELD: encoded})
    return key


def _global_budget(state: OperatorState, without: Gone | None) -> Budget | None:
    """The --global-budget Budget; ResolutionError when it is configured but missing.

    Every request must count against it, so a key is not let through without it.
    """
    if state.config.global_budget is None:
        return None
    namespace, name = state.config.global_budget
    budget = state.global_budget()
    if budget is None or without == ("Budget", namespace, name):
        raise ResolutionError(
            "--global-budget",
            "GlobalBudgetNotFound",
            f"the global budget {namespace}/{name} was not found (is its namespace watched?)",
        )
    return budget


async def apply_key(
    state: OperatorState,
    apikey: ApiKey,
    *,
    without: Gone | None = None,
    known_key: bool = False,
) -> KeyOutcome:
    """Resolve an ApiKey and write (or withdraw) its policy; the old hash goes on rotation.

    `without` (kind, namespace, name) hides an object being deleted from resolution.
    `known_key`: the key is the one last written (a dependency changed, not the Secret),
    so its Secret need not be read again: that API call was most of the time from a
    Budget's change to the new policy in Redis. Rotations come through the Secret watch.
    """
    namespace, name = apikey.metadata.namespace, apikey.metadata.name
    async with state.lock(namespace, name):
        known = state.keys.get((namespace, name)) if known_key else None
        if known is not None and known.key_hint is not None:
            key_hash, hint = known.key_hash, known.key_hint
        else:
            key = await _ensure_key(state, apikey)
            key_hash, hint = hash_key(key), key_hint(key)
        team = None
        if apikey.spec.team is not None and without != ("Team", namespace, apikey.spec.team):
            team = state.indexes.teams.named(namespace, apikey.spec.team)
        error: ResolutionError | None = None
        try:
            policy = resolve_key_policy(
                apikey,
                key_hash,
                team,
                state.indexes.objects(namespace, without=without),
                _global_budget(state, without),
            )
        except ResolutionError as problem:
            error = problem
            # A key whose limits cannot be resolved is refused rather than let through
            # without them, and told why (not "unknown key").
            policy = incomplete_policy(apikey, key_hash, problem)
        previous = state.keys.get((namespace, name))
        await state.store.put_policy(policy)
        # Recorded only once written, so the Redis-loss watchdog never mistakes a policy
        # on its way for a lost one.
        state.keys[(namespace, name)] = KeyRecord(key_hash, policy, hint)
        if previous is not None and previous.key_hash != key_hash:
            await state.store.delete_policy(previous.key_hash)
    return KeyOutcome(ready_observation(error, "policy written to Redis"), hint)


def incomplete_policy(apikey: ApiKey, key_hash: str, error: ResolutionError) -> ResolvedPolicy:
    """The policy of a key whose limits cannot be resolved: it only refuses, and says why."""
    return ResolvedPolicy(
        key_hash=key_hash,
        namespace=apikey.metadata.namespace,
        key_name=apikey.metadata.name,
        refusal=PolicyRefusal(reason=error.reason, message=f"{error.field}: {error.message}"),
    )


async def forget_key(state: OperatorState, namespace: str, name: str, secret_name: str) -> None:
    """Withdraw a deleted ApiKey's policy (by the hash written, and the Secret's now)."""
    async with state.lock(namespace, name):
        record = state.keys.pop((namespace, name), None)
        hashes = {record.key_hash} if record is not None else set()
        key = key_from_secret(await state.kube.read_secret(namespace, secret_name))
        if key is not None:
            hashes.add(hash_key(key))
        for key_hash in hashes:
            await state.store.delete_policy(key_hash)


def key_status_fields(outcome: KeyOutcome, generation: int | None) -> dict[str, Any]:
    """The status fields a key reconcile writes (spend fields are the status sync's)."""
    return {"observedGeneration": generation, "keyHint": outcome.key_hint}


def key_observations(apikey: ApiKey, outcome: KeyOutcome, now: datetime) -> list[Observation]:
    """Ready, Expired and Blocked of a reconciled key."""
    return [
        outcome.ready,
        *key_state_observations(expires=apikey.spec.expires, blocked=apikey.spec.blocked, now=now),
    ]


REFRESH_CONCURRENCY = 16
"""Keys re-applied at once when a Team or Budget that many keys use changes."""


async def refresh_keys(
    state: OperatorState,
    apikeys: list[ApiKey],
    *,
    without: Gone | None = None,
    known_key: bool = False,
) -> None:
    """Re-apply ApiKeys other than the handled object and patch their status directly.

    Concurrently (up to REFRESH_CONCURRENCY), so a Budget used by a thousand keys is
    not a thousand Redis and API round trips in a row. A key that fails (Redis or the
    API server away) is marked stale, for the status sync to apply again; the others
    go on. `known_key`: see `apply_key`.
    """
    now = datetime.now(UTC)
    slots = asyncio.Semaphore(REFRESH_CONCURRENCY)

    async def refresh(apikey: ApiKey) -> None:
        ref = (apikey.metadata.namespace, apikey.metadata.name)
        async with slots:
            try:
                await _refresh_key(state, apikey, without, now, known_key=known_key)
            except (RedisError, ApiException, OSError) as error:
                logger.warning("refreshing ApiKey %s/%s failed, will retry: %s", *ref, error)
                state.stale.add(ref)

    await asyncio.gather(*(refresh(apikey) for apikey in apikeys))


async def _refresh_key(
    state: OperatorState,
    apikey: ApiKey,
    without: Gone | None,
    now: datetime,
    *,
    known_key: bool,
) -> None:
    outcome = await apply_key(state, apikey, without=without, known_key=known_key)
    current = apikey.status.model_dump(by_alias=True, mode="json") if apikey.status else {}
    patch, transitions = update_status(
        state,
        apikey.metadata.uid,
        current,
        key_status_fields(outcome, apikey.metadata.generation),
        key_observations(apikey, outcome, now),
        generation=apikey.metadata.generation,
        now=now,
    )
    if patch:
        await state.kube.patch_status(
            "apikeys", apikey.metadata.namespace, apikey.metadata.name, patch
        )
    await post_events(state, apikey, transitions)


async def reresolve_dependents(
    state: OperatorState,
    kind: DependencyKind,
    namespace: str,
    name: str,
    *,
    deleted: bool = False,
) -> int:
    """Re-resolve every ApiKey that `kind/name` affects; how many.

    The global budget affects every key in every namespace.
    """
    if kind == "Budget" and state.config.global_budget == (namespace, name):
        affected = state.indexes.keys.everywhere()
    else:
        affected = keys_affected(
            kind, name, state.indexes.teams.of(namespace), state.indexes.keys.of(namespace)
        )
    applied = keys_to_reresolve(affected, state.keys, state.applying())
    await refresh_keys(
        state, applied, without=(kind, namespace, name) if deleted else None, known_key=True
    )
    return len(applied)


def team_ready(state: OperatorState, team: Team) -> Observation:
    """Ready of a Team: all its references resolve."""
    try:
        check_team_refs(team, state.indexes.objects(team.metadata.namespace))
    except ResolutionError as error:
        return ready_observation(error, "")
    return ready_observation(None, "references resolved")


# Status ------------------------------------------------------------------------------------


def sync_reference_status(
    state: OperatorState, obj: Budget | RateLimit, status: Mapping[str, Any]
) -> dict[str, Any]:
    """The status patch of a Budget or RateLimit: how many subjects use it, and Ready."""
    namespace = obj.metadata.namespace
    kind: Literal["Budget", "RateLimit"] = "Budget" if isinstance(obj, Budget) else "RateLimit"
    subjects = subjects_referencing(
        kind, obj.metadata.name, state.indexes.teams.of(namespace), state.indexes.keys.of(namespace)
    )
    patch, _ = update_status(
        state,
        obj.metadata.uid,
        status,
        {"subjects": subjects, "observedGeneration": obj.metadata.generation},
        [Observation("Ready", "True", "Valid", "spec is valid")],
        generation=obj.metadata.generation,
        now=datetime.now(UTC),
    )
    return patch
