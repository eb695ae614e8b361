"""The kopf handlers: thin, always the same steps (Gafaelfawr's shape).

Validate the body into the pydantic model (a validation error becomes a Ready=False
InvalidSpec status, never a retry loop) -> delegate to a service the factory built ->
the service writes the status into kopf's patch. Handlers never return a value: kopf
would write it into status. Handler progress and the diff-base live in annotations
(`llmquota.dev/...`), not in status. Spend and the conditions that follow from it are
not handlers' work: one loop syncs them for all objects (`services.status_sync`).

Everything is registered on a registry built per operator (`build_registry`), so that
the webhook handler exists only when a webhook server does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from llmquota.models import (
    API_GROUP,
    API_VERSION,
    ApiKey,
    Budget,
    BudgetOverride,
    RateLimit,
    Team,
)
from llmquota.operator.config import OperatorConfig
from llmquota.operator.factory import Factory
from llmquota.operator.injection import injected_spec, pod_workload, wants_injection
from llmquota.operator.lifecycle import cleanup, login, startup
from llmquota.operator.metrics import ReconcileResult, forget_exhaustion, measure_reconcile
from llmquota.operator.rules.key_secrets import SECRET_LABEL, key_from_secret, secret_name_of
from llmquota.operator.rules.readiness import invalid_spec_observation
from llmquota.operator.services import mirroring
from llmquota.operator.state import MEMO_KEY
from llmquota.operator.storage.kubernetes import KubeObject
from llmquota.store import StoreError

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


def _factory(memo: Mapping[str, Any]) -> Factory:
    factory: Factory = memo[MEMO_KEY]
    return factory


@contextlib.contextmanager
def _retried_while_redis_away() -> Iterator[None]:
    """Redis unreachable: kopf retries the handler in 2 s."""
    try:
        yield
    except StoreError as error:
        raise kopf.TemporaryError(f"Redis unavailable: {error}", delay=2) from error


async def _validated(
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
        target = KubeObject.of_body(body)
        fields = {"observedGeneration": target.generation}
        observations = [invalid_spec_observation(error)]
        now = datetime.now(UTC)
        writer = _factory(memo).status_writer
        await writer.write(target, status, fields, observations, now=now, into=patch.status)
        measured.result = "invalid"
        return None


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


# Indexes ---------------------------------------------------------------------------------


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
        apikey = await _validated(ApiKey, body, status, patch, memo=memo, measured=measured)
        if apikey is None:
            return
        with _retried_while_redis_away():
            ready = await _factory(memo).keys.reconcile(apikey, status, into=patch.status)
        measured.result = "ok" if ready else "invalid"


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
    sweep for orphaned policies (`services.orphan_sweep`), which runs at start.
    """
    if not _deleted(event):
        return
    factory = _factory(memo)
    factory.status_writer.forget(uid)
    forget_exhaustion(_namespaced(namespace), "ApiKey", name)
    with measure_reconcile("ApiKey") as measured, _retried_while_redis_away():
        await factory.keys.forget(_namespaced(namespace), name, secret_name_of(name, spec))
        measured.result = "ok"


def secret_of_interest(
    name: str, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> bool:
    """Secrets the operator generated, or that some ApiKey names in spec.secretName."""
    if SECRET_LABEL in labels:
        return True
    factory = memo.get(MEMO_KEY)
    if not isinstance(factory, Factory):
        return False
    return bool(factory.state.indexes.keys_using_secret(_namespaced(namespace), name))


async def secret_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A key Secret changed: rotate the policy of the ApiKeys using it (old hash deleted)."""
    key = None if _deleted(event) else key_from_secret(body)
    await _factory(memo).keys.rotate(_namespaced(namespace), name, key)


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
        team = await _validated(Team, body, status, patch, memo=memo, measured=measured)
        if team is None:
            return
        with _retried_while_redis_away():
            ready = await _factory(memo).references.team_changed(
                team, status, into=patch.status, resumed=reason == kopf.Reason.RESUME
            )
        measured.result = "ok" if ready else "invalid"


async def team_deleted(
    event: kopf.RawEvent, uid: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """The team's keys lose it: Ready=False TeamNotFound, their policies refusing them."""
    if not _deleted(event):
        return
    factory = _factory(memo)
    factory.status_writer.forget(uid)
    forget_exhaustion(_namespaced(namespace), "Team", name)
    with measure_reconcile("Team") as measured, _retried_while_redis_away():
        await factory.references.reresolve("Team", _namespaced(namespace), name, deleted=True)
        measured.result = "ok"


# Budget and RateLimit --------------------------------------------------------------------


def _reference_handlers(
    model: type[ReferenceT], kind: Literal["Budget", "RateLimit"]
) -> tuple[Any, Any]:
    """The change and deletion handlers of Budgets, or of RateLimits."""

    async def changed(
        body: kopf.Body,
        status: kopf.Status,
        patch: kopf.Patch,
        memo: kopf.Memo,
        reason: str,
        **_: Any,
    ) -> None:
        with measure_reconcile(kind) as measured:
            obj = await _validated(model, body, status, patch, memo=memo, measured=measured)
            if obj is None:
                return
            with _retried_while_redis_away():
                await _factory(memo).references.reference_changed(
                    obj, status, into=patch.status, resumed=reason == kopf.Reason.RESUME
                )
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
        factory = _factory(memo)
        factory.status_writer.forget(uid)
        with measure_reconcile(kind) as measured, _retried_while_redis_away():
            await factory.references.reresolve(kind, _namespaced(namespace), name, deleted=True)
            measured.result = "ok"

    return changed, deleted


# BudgetOverride --------------------------------------------------------------------------


async def override_changed(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Create, update, resume: Active and its Events, the target's keys re-resolved."""
    with measure_reconcile("BudgetOverride") as measured:
        override = await _validated(
            BudgetOverride, body, status, patch, memo=memo, measured=measured
        )
        if override is None:
            return
        with _retried_while_redis_away():
            await _factory(memo).overrides.reconcile(override, status, into=patch.status)
        measured.result = "ok"


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
        with _retried_while_redis_away():
            await _factory(memo).overrides.withdraw(override)
        measured.result = "ok"


# Webhook ---------------------------------------------------------------------------------


def pod_wants_sidecar(annotations: kopf.Annotations, **_: Any) -> bool:
    """Only Pods annotated llmquota.dev/inject: "true"."""
    return wants_injection(annotations)


async def inject_sidecar(
    config: OperatorConfig,
    *,
    spec: kopf.Spec,
    meta: kopf.Meta,
    patch: kopf.Patch,
    namespace: str | None,
    dryrun: bool,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Mutating webhook: add the sidecar, its volumes, its identity and OPENAI_BASE_URL.

    The sidecar ConfigMap and credential Secret are mirrored into the Pod's namespace
    too (not on a dry run), since a Pod mounts only its own namespace's. The Pod's
    workload is fixed now, from its ownerReferences (a Job's read for its CronJob).
    """
    if config.sidecar is None:
        return
    state = _factory(memo).state
    try:
        sidecar = await mirroring.injected_sidecar(state, config.sidecar)
    except (ApiException, OSError) as error:
        logger.warning("sidecar ConfigMap unreadable, injecting the flags' settings: %s", error)
        sidecar = config.sidecar
    metadata = dict(meta.items())
    job: Mapping[str, Any] = next(
        (o for o in metadata.get("ownerReferences") or [] if o.get("controller")), {}
    )
    made_by = (
        await state.kubernetes.job_controller(namespace, str(job.get("name")))
        if namespace and job.get("kind") == "Job"
        else None
    )
    injected = injected_spec(spec, sidecar, pod_workload(metadata, made_by))
    if injected is None:
        return
    patch.spec.update(injected)
    if namespace and not dryrun:
        await mirroring.mirror_into(state, namespace)


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
    # Expiries are recorded by the status sync (`OverrideService.record_expiries`), not a
    # kopf daemon per override: a daemon needs a finalizer, which would trap the removal.
    for plural, (changed, deleted) in (
        ("budgets", _reference_handlers(Budget, "Budget")),
        ("ratelimits", _reference_handlers(RateLimit, "RateLimit")),
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
