"""The kopf handlers: thin, always the same steps (Gafaelfawr's shape).

Validate the body into the pydantic model -> turn a validation error into a Ready=False
condition (never a retry loop) -> delegate to `service` -> patch status ourselves.
Handlers never return a value: kopf would write it into status. Handler progress and
the diff-base live in annotations (`llmquota.dev/...`), not in status. Spend and the
conditions that follow from it are not handlers' work: one loop syncs them for all
objects (`status_sync`, started at startup).

Everything is registered on a registry built per operator (`build_registry`), so that
the webhook handler exists only when a webhook server does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError
from redis.exceptions import RedisError

from llmquota.models import (
    API_GROUP,
    API_VERSION,
    ApiKey,
    Budget,
    BudgetOverride,
    RateLimit,
    Team,
)
from llmquota.operator import mirroring, overrides, service
from llmquota.operator.conditions import Observation
from llmquota.operator.config import OperatorConfig
from llmquota.operator.injection import injected_spec, wants_injection
from llmquota.operator.keys import SECRET_LABEL, key_from_secret, secret_name_of
from llmquota.operator.lifecycle import cleanup, login, startup
from llmquota.operator.metrics import ReconcileResult, forget_exhaustion, measure_reconcile
from llmquota.operator.state import MEMO_KEY, OperatorState
from llmquota.policy.key_hash import hash_key

__all__ = ["build_registry"]

ResourceT = TypeVar("ResourceT", ApiKey, Team, Budget, RateLimit, BudgetOverride)
ReferenceT = TypeVar("ReferenceT", Budget, RateLimit)

logger = logging.getLogger(__name__)

Model = type[Team] | type[ApiKey] | type[Budget] | type[RateLimit] | type[BudgetOverride]
PLURALS: dict[str, Model] = {
    "teams": Team,
    "apikeys": ApiKey,
    "budgets": Budget,
    "ratelimits": RateLimit,
    "budgetoverrides": BudgetOverride,
}


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A kopf body as plain dicts (pydantic validates mappings it can copy)."""
    return dict(body.items())


def _namespaced(namespace: str | None) -> str:
    """llmquota's kinds and Secrets are namespaced: kopf always passes one."""
    if namespace is None:
        msg = "a namespaced object without a namespace"
        raise kopf.PermanentError(msg)
    return namespace


def _state(memo: Mapping[str, Any]) -> OperatorState:
    state: OperatorState = memo[MEMO_KEY]
    return state


def _invalid(
    state: OperatorState, body: kopf.Body, status: Mapping[str, Any], error: ValidationError
) -> dict[str, Any]:
    """Ready=False InvalidSpec (no retries: only a new spec can fix it) and an Event."""
    message = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )
    patch, transitions = service.update_status(
        state,
        body["metadata"].get("uid"),
        status,
        {"observedGeneration": body["metadata"].get("generation")},
        [Observation("Ready", "False", "InvalidSpec", message)],
        generation=body["metadata"].get("generation"),
        now=datetime.now(UTC),
    )
    service.tell(body, transitions)
    return patch


def _validated(
    model: type[ResourceT],
    body: kopf.Body,
    status: Mapping[str, Any],
    patch: kopf.Patch,
    *,
    memo: kopf.Memo,
    measured: ReconcileResult,
) -> ResourceT | None:
    """Step one of every handler: the body as its model, or an InvalidSpec status."""
    try:
        return model.model_validate(_plain(body))
    except ValidationError as error:
        patch.status.update(_invalid(_state(memo), body, status, error))
        measured.result = "invalid"
        return None


async def apikeys_by_team(
    body: kopf.Body, namespace: str | None, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], ApiKey] | None:
    """(namespace, team) -> its ApiKeys: a Team's status sync needs only its own keys."""
    team = spec.get("team")
    if not team:
        return None
    try:
        return {(_namespaced(namespace), str(team)): ApiKey.model_validate(_plain(body))}
    except ValidationError:
        return None


async def apikeys_by_secret(
    body: kopf.Body, namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], ApiKey] | None:
    """(namespace, Secret name) -> the ApiKeys whose key is in that Secret."""
    try:
        apikey = ApiKey.model_validate(_plain(body))
    except ValidationError:
        return None
    return {(_namespaced(namespace), secret_name_of(name, spec)): apikey}


def _index(model: Model) -> Any:
    """A kopf indexer: namespace -> parsed models (invalid objects are left out)."""

    # Async on purpose: kopf runs sync handlers in a thread pool, a cost per object that
    # adds up to seconds with thousands of objects at start-up.
    async def index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, Any] | None:
        try:
            return {_namespaced(namespace): model.model_validate(_plain(body))}
        except ValidationError:
            return None

    return index


# ApiKey ----------------------------------------------------------------------------------


async def apikey_changed(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Create, update, resume: Secret, resolution, policy in Redis, status."""
    with measure_reconcile("ApiKey") as measured:
        apikey = _validated(ApiKey, body, status, patch, memo=memo, measured=measured)
        if apikey is None:
            return
        measured.result = await _reconcile_key(_state(memo), apikey, body, status, patch)


async def _reconcile_key(
    state: OperatorState,
    apikey: ApiKey,
    body: kopf.Body,
    status: Mapping[str, Any],
    patch: kopf.Patch,
) -> str:
    """Apply one ApiKey and patch its status; "ok" or "invalid" (for the metric)."""
    try:
        outcome = await service.apply_key(state, apikey)
    except RedisError as error:
        raise kopf.TemporaryError(f"Redis unavailable: {error}", delay=2) from error
    now = datetime.now(UTC)
    status_update, transitions = service.update_status(
        state,
        apikey.metadata.uid,
        status,
        service.key_status_fields(outcome, apikey.metadata.generation),
        service.key_observations(apikey, outcome, now),
        generation=apikey.metadata.generation,
        now=now,
    )
    patch.status.update(status_update)
    service.tell(body, transitions)
    return "ok" if outcome.ready.status == "True" else "invalid"


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


async def apikey_deleted(
    event: kopf.RawEvent,
    *,
    spec: kopf.Spec,
    uid: str,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """The key's policy leaves Redis as the watch reports the ApiKey gone.

    No finalizer: a deletion this watch misses (the operator was down) is caught by the
    sweep for orphaned policies (`orphans`), which runs at start.
    """
    if not _deleted(event):
        return
    _state(memo).conditions.pop(uid, None)
    forget_exhaustion(_namespaced(namespace), "ApiKey", name)
    with measure_reconcile("ApiKey") as measured:
        try:
            await service.forget_key(
                _state(memo), _namespaced(namespace), name, secret_name_of(name, spec)
            )
        except RedisError as error:
            raise kopf.TemporaryError(f"Redis unavailable: {error}", delay=2) from error
        measured.result = "ok"


def secret_of_interest(
    name: str, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> bool:
    """Secrets the operator generated, or that some ApiKey names in spec.secretName."""
    if SECRET_LABEL in labels:
        return True
    state = memo.get(MEMO_KEY)
    if not isinstance(state, OperatorState):
        return False
    return bool(state.indexes.keys_using_secret(_namespaced(namespace), name))


def _rotated(state: OperatorState, namespace: str, name: str, new_hash: str | None) -> bool:
    """Whether a key's Secret now differs from the hash written (gone: only if known)."""
    record = state.keys.get((namespace, name))
    if new_hash is None:
        return record is not None  # a live key lost its Secret: generate a new one
    return record is None or record.key_hash != new_hash


async def secret_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A key Secret changed: rotate the policy of the ApiKeys using it (old hash deleted)."""
    state = _state(memo)
    deleted = event.get("type") == "DELETED"
    key = None if deleted else key_from_secret(body)
    new_hash = None if key is None else hash_key(key)
    stale = [
        apikey
        for apikey in state.indexes.keys_using_secret(_namespaced(namespace), name)
        if _rotated(state, _namespaced(namespace), apikey.metadata.name, new_hash)
    ]
    await service.refresh_keys(state, stale)


# Team ------------------------------------------------------------------------------------


async def team_changed(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    reason: str,
    **_: Any,
) -> None:
    """Create, update, resume: check references, then re-resolve the team's keys."""
    with measure_reconcile("Team") as measured:
        team = _validated(Team, body, status, patch, memo=memo, measured=measured)
        if team is None:
            return
        state = _state(memo)
        ready = service.team_ready(state, team)
        status_update, transitions = service.update_status(
            state,
            team.metadata.uid,
            status,
            {"observedGeneration": team.metadata.generation},
            [ready],
            generation=team.metadata.generation,
            now=datetime.now(UTC),
        )
        patch.status.update(status_update)
        service.tell(body, transitions)
        if reason != kopf.Reason.RESUME:  # resumed keys resolve themselves
            await _reresolve(state, "Team", team.metadata.namespace, team.metadata.name)
        measured.result = "ok" if ready.status == "True" else "invalid"


async def _reresolve(
    state: OperatorState,
    kind: service.DependencyKind,
    namespace: str,
    name: str,
    *,
    deleted: bool = False,
) -> None:
    try:
        await service.reresolve_dependents(state, kind, namespace, name, deleted=deleted)
    except RedisError as error:
        raise kopf.TemporaryError(f"Redis unavailable: {error}", delay=2) from error


async def team_deleted(
    event: kopf.RawEvent, uid: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """The team's keys lose it: Ready=False TeamNotFound, their policies refusing them."""
    if not _deleted(event):
        return
    _state(memo).conditions.pop(uid, None)
    forget_exhaustion(_namespaced(namespace), "Team", name)
    with measure_reconcile("Team") as measured:
        await _reresolve(_state(memo), "Team", _namespaced(namespace), name, deleted=True)
        measured.result = "ok"


# Budget and RateLimit --------------------------------------------------------------------


def _reference_changed(model: type[ReferenceT]) -> Any:
    kind: service.DependencyKind = "Budget" if model is Budget else "RateLimit"

    async def changed(
        body: kopf.Body,
        status: kopf.Status,
        patch: kopf.Patch,
        memo: kopf.Memo,
        reason: str,
        **_: Any,
    ) -> None:
        with measure_reconcile(kind) as measured:
            obj = _validated(model, body, status, patch, memo=memo, measured=measured)
            if obj is None:
                return
            state = _state(memo)
            patch.status.update(service.sync_reference_status(state, obj, status))
            if reason != kopf.Reason.RESUME:
                await _reresolve(state, kind, obj.metadata.namespace, obj.metadata.name)
            measured.result = "ok"

    async def deleted(
        event: kopf.RawEvent,
        uid: str,
        namespace: str | None,
        name: str,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        if not _deleted(event):
            return
        _state(memo).conditions.pop(uid, None)
        with measure_reconcile(kind) as measured:
            await _reresolve(_state(memo), kind, _namespaced(namespace), name, deleted=True)
            measured.result = "ok"

    return changed, deleted


# Webhook ---------------------------------------------------------------------------------


def pod_wants_sidecar(annotations: kopf.Annotations, **_: Any) -> bool:
    """Only Pods annotated llmquota.dev/inject: "true"."""
    return wants_injection(annotations)


async def inject_sidecar(
    config: OperatorConfig,
    *,
    spec: kopf.Spec,
    patch: kopf.Patch,
    namespace: str | None,
    dryrun: bool,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Mutating webhook: add the sidecar, its volumes and OPENAI_BASE_URL.

    The sidecar ConfigMap and credential Secret are mirrored into the Pod's namespace
    too (not on a dry run), since a Pod mounts only its own namespace's.
    """
    if config.sidecar is None:
        return
    state = _state(memo)
    try:
        sidecar = await mirroring.injected_sidecar(state, config.sidecar)
    except (ApiException, OSError) as error:
        logger.warning("sidecar ConfigMap unreadable, injecting the flags' settings: %s", error)
        sidecar = config.sidecar
    injected = injected_spec(spec, sidecar)
    if injected is None:
        return
    patch.spec.update(injected)
    if namespace and not dryrun:
        await mirroring.mirror_into(state, namespace)


# BudgetOverride --------------------------------------------------------------------------


async def override_changed(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Create, update, resume: Active and its Events, the target's keys re-resolved."""
    with measure_reconcile("BudgetOverride") as measured:
        override = _validated(BudgetOverride, body, status, patch, memo=memo, measured=measured)
        if override is None:
            return
        status_update, events = overrides.override_status(_state(memo), override, status)
        patch.status.update(status_update)
        for type_, reason, message in events:
            kopf.event(body, type=type_, reason=reason, message=message)
        await _refresh_target(_state(memo), override)
        measured.result = "ok"


async def _refresh_target(
    state: OperatorState, override: BudgetOverride, *, gone: bool = False
) -> None:
    try:
        await overrides.refresh_target(state, override, datetime.now(UTC), gone=gone)
    except RedisError as error:
        raise kopf.TemporaryError(f"Redis unavailable: {error}", delay=2) from error


async def override_deleted(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """The increase is withdrawn from the target's keys as the watch reports it gone.

    A watched event, not a finalizer, as for the other kinds; a deletion missed while
    the operator was down changes nothing that matters, since the increase would
    have ended at its `expires` by itself, and the key's next re-resolution drops it.
    """
    if not _deleted(event):
        return
    with measure_reconcile("BudgetOverride") as measured:
        try:
            override = BudgetOverride.model_validate(_plain(body))
        except ValidationError:
            return
        _state(memo).conditions.pop(override.metadata.uid or "", None)
        await _refresh_target(_state(memo), override, gone=True)
        measured.result = "ok"


# Registry --------------------------------------------------------------------------------


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """All handlers of one operator, closed over its configuration."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry, id="startup")(functools.partial(startup, config))
    kopf.on.cleanup(registry=registry, id="cleanup")(cleanup)
    kopf.on.login(registry=registry, id="login")(login)
    for plural, model in PLURALS.items():
        kopf.index(API_GROUP, API_VERSION, plural, registry=registry, id=f"llmquota_{plural}")(
            _index(model)
        )
    for secondary in (apikeys_by_team, apikeys_by_secret):
        kopf.index(
            API_GROUP,
            API_VERSION,
            "apikeys",
            registry=registry,
            id=f"llmquota_{secondary.__name__}",
        )(secondary)
    resource = (API_GROUP, API_VERSION)

    for on_change in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on_change(*resource, "apikeys", registry=registry, id="apikey")(apikey_changed)
        on_change(*resource, "teams", registry=registry, id="team")(team_changed)
    # Deletions are watched events, not kopf.on.delete: that would put a finalizer on
    # every object, and with the operator removed first they would hang Terminating.
    kopf.on.event(*resource, "apikeys", registry=registry, id="apikey-delete")(apikey_deleted)
    kopf.on.event(*resource, "teams", registry=registry, id="team-delete")(team_deleted)
    for on_change in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on_change(*resource, "budgetoverrides", registry=registry, id="budgetoverride")(
            override_changed
        )
    kopf.on.event(*resource, "budgetoverrides", registry=registry, id="budgetoverride-delete")(
        override_deleted
    )
    # Expiries are recorded by the status sync (`overrides.record_expiries`), not a kopf
    # daemon per override: a daemon needs a finalizer, which would trap the removal.
    for plural, (changed, deleted) in (
        ("budgets", _reference_changed(Budget)),
        ("ratelimits", _reference_changed(RateLimit)),
    ):
        for on_change in (kopf.on.create, kopf.on.update, kopf.on.resume):
            on_change(*resource, plural, registry=registry, id=plural)(changed)
        kopf.on.event(*resource, plural, registry=registry, id=f"{plural}-delete")(deleted)
    kopf.on.event("", "v1", "secrets", registry=registry, id="key-secret", when=secret_of_interest)(
        secret_event
    )
    if config.webhook_cert_dir is not None:
        kopf.on.mutate(
            "", "v1", "pods",
            operation="CREATE",
            registry=registry,
            id="inject-sidecar",
            when=pod_wants_sidecar,
            persistent=False,
        )(functools.partial(inject_sidecar, config))  # fmt: skip
    return registry
