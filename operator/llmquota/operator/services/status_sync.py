"""The status sync: one loop that brings every status up to date from Redis.

Every --status-interval it walks the objects in kopf's indexes, reads the budget counters
of a batch of them in one Redis round trip, turns counters into statuses with the pure
functions of `status_view`, and patches only the objects whose status differs, a few at
a time. It was a kopf timer per object: thousands of them, started together at a cold
start and so firing together every interval, a burst that held a watch event (a lowered
Budget on its way to Redis) for up to two seconds. One loop that yields between batches
leaves the event loop to the watches.

It runs outside any handler, so its statuses and Events go out through the operator's
own client (`StatusWriter` over `KubernetesStorage`), not kopf's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from llmquota.models import ApiKey, Budget, RateLimit, Team
from llmquota.operator.metrics import (
    BUDGET_EXHAUSTS_IN,
    BUDGET_RESETS,
    STATUS_SYNC_SECONDS,
    forget_exhaustion,
)
from llmquota.operator.rules.conditions import Observation, condition_holds
from llmquota.operator.rules.dependents import team_member_users
from llmquota.operator.rules.forecast import (
    Forecast,
    at_risk_observation,
    forecast,
    forecast_fields,
    record_sample,
)
from llmquota.operator.rules.status_view import (
    BudgetView,
    GuardView,
    Seed,
    budget_observations,
    budget_view,
    ended_spend,
    key_state_observations,
    reset_worth_telling,
    seed_from_status,
    subject_status_fields,
    window_view,
    windows_fields,
)
from llmquota.operator.services.keys import KeyService
from llmquota.operator.services.overrides import OverrideService
from llmquota.operator.services.references import ReferenceService
from llmquota.operator.services.status_writer import StatusWriter
from llmquota.operator.services.workloads import WorkloadService
from llmquota.operator.state import OperatorState, ScopeRef
from llmquota.operator.storage.kubernetes import KubeObject
from llmquota.policy.limits import (
    BudgetLimits,
    ResolvedPolicy,
    Scope,
    ScopeKind,
    WindowLimits,
    usd,
)
from llmquota.policy.resolve import COUNT_ONLY, ResolutionError, member_scope, resolve_team
from llmquota.store import BudgetCounter, StoreError

__all__ = ["BATCH_SIZE", "PATCH_CONCURRENCY", "StatusSync"]

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
"""Objects whose counters are read in one Redis round trip, between two yields."""
PATCH_CONCURRENCY = 8
"""Status patches in flight at once: leaves the API connections to the watches."""


@dataclass(frozen=True, slots=True)
class Counted:
    """One budget counter a status shows: where it is, its limits, what the status says."""

    ref: ScopeRef
    limits: BudgetLimits
    shown: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Guard:
    """A wider scope whose counter an ApiKey's BudgetExceeded reads (global, team, member).

    Only read: the Team's own sync seeds it and tells about its resets.
    """

    ref: ScopeRef
    limits: BudgetLimits
    kind: ScopeKind
    label: str


@dataclass(frozen=True, slots=True)
class Further:
    """A further window (`windows`) of the subject's own budget, or of a guard's: read
    from its own counter. `guard` is None for the subject's own."""

    ref: ScopeRef
    limits: BudgetLimits
    window: WindowLimits
    guard: Guard | None = None

    @property
    def counter(self) -> tuple[str, str, str]:
        """(tag, scope id, window): what `read_window_budgets` takes."""
        return (*self.ref, self.window.window)


def _further(ref: ScopeRef, limits: BudgetLimits, guard: Guard | None = None) -> list[Further]:
    return [Further(ref, limits, window, guard) for window in limits.windows]


@dataclass(slots=True)
class Subject:
    """A Team or ApiKey to sync: its status as last seen and the counters it shows.

    `members` are a Team's (user, scope id), in the order of `counted[1:]`; `guards` the
    wider scopes an ApiKey is refused by, widest first (admission's order).
    """

    obj: ApiKey | Team
    status: dict[str, Any]
    counted: list[Counted]
    members: list[tuple[str, str]] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    further: list[Further] = field(default_factory=list)
    """Further windows: the subject's own (in spec order), then each guard's."""

    @property
    def refs(self) -> list[ScopeRef]:
        """Every counter the subject's sync reads, in one batch: counted, then guards."""
        return [c.ref for c in self.counted] + [g.ref for g in self.guards]


def _shown(obj: ApiKey | Team) -> dict[str, Any]:
    return obj.status.model_dump(by_alias=True, mode="json") if obj.status else {}


def _key_scope(policy: ResolvedPolicy) -> Scope | None:
    return next((scope for scope in policy.scopes if scope.kind == "key"), None)


def _guards(policy: ResolvedPolicy) -> list[Guard]:
    """The policy's budgeted scopes wider than the key, in the order admission checks."""
    return [
        Guard((scope.tag, scope.id), scope.budget, scope.kind, scope.label)
        for scope in policy.scopes
        if scope.kind in _GUARD_KINDS and scope.budget is not None and scope.budget.max_nanos >= 0
    ]


_GUARD_KINDS = frozenset({"global", "team", "member"})


def _key_subject(state: OperatorState, apikey: ApiKey) -> Subject | None:
    """The ApiKey's sync, None when its handler has not run in this process yet."""
    record = state.keys.get((apikey.metadata.namespace, apikey.metadata.name))
    if record is None:
        return None
    status = _shown(apikey)
    scope = None if record.policy is None else _key_scope(record.policy)
    counted = []
    if scope is not None and scope.budget is not None:
        counted = [Counted((scope.tag, scope.id), scope.budget, status)]
    guards = [] if record.policy is None else _guards(record.policy)
    further = [] if not counted else _further(counted[0].ref, counted[0].limits)
    further += [item for guard in guards for item in _further(guard.ref, guard.limits, guard)]
    return Subject(apikey, status, counted, guards=guards, further=further)


def _team_subject(state: OperatorState, team: Team) -> Subject:
    namespace = team.metadata.namespace
    status = _shown(team)
    try:
        own = resolve_team(team, state.indexes.objects(namespace)).scope
    except ResolutionError:
        return Subject(team, status, [])
    users = team_member_users(team, state.indexes.team_keys(namespace, team.metadata.name))
    members = [member_scope(user, team, own) for user in users]
    shown_members = status.get("memberSpend") or {}
    counted = [Counted((own.tag, own.id), _budget_of(own), status)] + [
        Counted(
            (member.tag, member.id),
            _budget_of(member),
            {"spend": shown_members.get(user), "budgetResetAt": status.get("budgetResetAt")},
        )
        for user, member in zip(users, members, strict=True)
    ]
    return Subject(
        team,
        status,
        counted,
        [(user, m.id) for user, m in zip(users, members, strict=True)],
        further=_further(counted[0].ref, counted[0].limits),
    )


def _budget_of(scope: Scope) -> BudgetLimits:
    """A Team's or member's budget (resolution gives both one: count-only at least)."""
    return scope.budget or COUNT_ONLY


def _subject(state: OperatorState, obj: ApiKey | Team) -> Subject | None:
    return _key_subject(state, obj) if isinstance(obj, ApiKey) else _team_subject(state, obj)


async def _restore_missing(
    state: OperatorState, counted: Counted, now_ms: int
) -> BudgetCounter | None:
    """Put back a counter that is missing although this window has spend; the counter.

    A counter lives until a day after its window ends, so one missing inside its window
    was lost with Redis's data (a restart without persistence, a flush). Reading it as
    zero would overwrite the remembered seed, and then the status, with 0 before the
    recovery loop notices the loss, and the spend would be gone for good. So the sync
    re-seeds it itself: from what this process last saw of it, or, the first time it sees
    the counter (the operator restarted too), from the status the object shows. A counter
    present with a lower value is read as it is.
    """
    window = counted.limits.window_at(now_ms)
    seed = state.seeds.get(counted.ref)
    if seed is None:
        seed = seed_from_status(counted.limits, counted.shown, now_ms)
    if seed is None or seed.window.start_ms != window.start_ms or seed.spend_nanos <= 0:
        return None
    tag, scope_id = counted.ref
    window_bounds = (seed.window.start_ms, seed.window.end_ms)
    if await state.store.seed_budget(
        tag, scope_id, window_bounds, seed.spend_nanos, seed.model_spend_nanos
    ):
        logger.warning("budget counter %s was missing: re-seeded from the last status", scope_id)
        return BudgetCounter(seed.window.start_ms, seed.spend_nanos, 0, seed.model_spend_nanos)
    # Someone (a sidecar, the recovery loop) recreated it meanwhile: read that.
    (counter,) = await state.store.read_budgets([counted.ref])
    return counter


def _guard_views(
    subject: Subject,
    counters: Sequence[BudgetCounter],
    further: Sequence[BudgetView],
    now_ms: int,
) -> list[GuardView]:
    """The guards in admission's order, each main window followed by its further ones."""
    views: list[GuardView] = []
    for guard, counter in zip(subject.guards, counters, strict=True):
        views.append(GuardView(guard.kind, guard.label, budget_view(guard.limits, counter, now_ms)))
        views += [
            GuardView(guard.kind, f"{guard.label} ({view.duration} window)", view)
            for item, view in zip(subject.further, further, strict=True)
            if item.guard is guard
        ]
    return views


def _further_views(
    subject: Subject, counters: Sequence[BudgetCounter], now_ms: int
) -> list[BudgetView]:
    return [
        window_view(item.limits, item.window, counter, now_ms)
        for item, counter in zip(subject.further, counters, strict=True)
    ]


def _forecast(
    state: OperatorState, subject: Subject, own: BudgetView, now_ms: int
) -> Forecast | None:
    """Take this pass's spend sample of the subject's own counter; its forecast now."""
    counted = subject.counted[0]
    span_ms = int(state.config.forecast_span * 1000)
    history = record_sample(
        state.spend_samples.get(counted.ref, []), (now_ms, own.spend_nanos), own.window, span_ms
    )
    state.spend_samples[counted.ref] = history
    return forecast(
        history,
        now_ms=now_ms,
        spend_nanos=own.spend_nanos,
        reserved_nanos=own.reserved_nanos,
        max_nanos=own.max_nanos,
        window=own.window,
        anchor_ms=counted.limits.anchor_ms,
        span_ms=span_ms,
    )


def _publish_forecast(obj: ApiKey | Team, prediction: Forecast | None, now_ms: int) -> None:
    """llmquota_budget_exhausts_in_seconds of one subject (no series without exhaustsAt)."""
    labels = (obj.metadata.namespace, obj.kind, obj.metadata.name)
    if prediction is None or prediction.exhausts_at_ms is None:
        forget_exhaustion(*labels)
        return
    BUDGET_EXHAUSTS_IN.labels(*labels).set((prediction.exhausts_at_ms - now_ms) / 1000)


def _fields_and_observations(
    state: OperatorState,
    subject: Subject,
    views: list[BudgetView],
    guards: list[GuardView],
    now_ms: int,
    *,
    own_windows: list[BudgetView],
) -> tuple[dict[str, Any], list[Observation]]:
    """What the status should say, given the subject's counters read as views.

    Takes this pass's forecast sample of the subject and publishes its forecast metric.
    """
    obj = subject.obj
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    fields: dict[str, Any] = {}
    observations: list[Observation] = []
    if isinstance(obj, ApiKey):
        observations = key_state_observations(
            expires=obj.spec.expires, blocked=obj.spec.blocked, now=now
        )
    else:
        keys = state.indexes.team_keys(obj.metadata.namespace, obj.metadata.name)
        fields["keys"] = len(keys)
    if views:
        own, *member_views = views
        prediction = _forecast(state, subject, own, now_ms)
        _publish_forecast(obj, prediction, now_ms)
        fields |= (
            subject_status_fields(own)
            | windows_fields(own, own_windows)
            | forecast_fields(prediction)
        )
        observations += [
            *budget_observations(own, guards, own_windows),
            at_risk_observation(
                prediction, was_at_risk=condition_holds(subject.status, "BudgetAtRisk")
            ),
        ]
        if isinstance(obj, Team):
            fields["memberSpend"] = {
                user: usd(view.spend_nanos)
                for (user, _), view in zip(subject.members, member_views, strict=True)
            }
    return fields, observations


async def _guarded(
    obj: ApiKey | Team | Budget | RateLimit, sync: Callable[[], Awaitable[None]]
) -> None:
    """One object's sync failing (API server, Redis) skips that object, not the pass.

    `sync` is called here, not before: a pass cancelled (the operator stopping) before
    this task ran would otherwise leave a coroutine that was never awaited.
    """
    try:
        await sync()
    except (StoreError, ApiException, OSError) as error:
        meta = obj.metadata
        logger.warning("status sync of %s %s/%s skipped: %s", obj.kind, meta.namespace,
                       meta.name, error)  # fmt: skip


class StatusSync:
    """The status-sync loop over every Team and ApiKey, Budget and RateLimit."""

    def __init__(
        self,
        state: OperatorState,
        status_writer: StatusWriter,
        keys: KeyService,
        references: ReferenceService,
        overrides: OverrideService,
        *,
        workloads: WorkloadService,
    ) -> None:
        """Work on the process context `state`; statuses go out through `status_writer`."""
        self._state = state
        self._status = status_writer
        self._keys = keys
        self._references = references
        self._overrides = overrides
        self._workloads = workloads

    async def run(self) -> None:
        """Forever: a `sync_once` every --status-interval (a failed pass is logged)."""
        while True:
            await asyncio.sleep(self._state.config.status_interval)
            started = time.perf_counter()
            try:
                await self.sync_once()
            except (StoreError, ApiException, OSError) as error:
                logger.warning("status sync pass cut short, will retry: %s", error)
            except Exception:
                # kopf retried a failing timer; this loop must not end on one bad pass.
                logger.exception("status sync pass failed, will retry")
            STATUS_SYNC_SECONDS.observe(time.perf_counter() - started)

    async def sync_once(self) -> None:
        """One pass over every known object: statuses from counters and the indexes.

        ApiKeys whose refresh failed (`state.stale`) are applied again first.
        """
        state = self._state
        indexes = state.indexes
        stale = [
            apikey
            for apikey in indexes.keys.everywhere()
            if (apikey.metadata.namespace, apikey.metadata.name) in state.stale
        ]
        for apikey in stale:
            state.stale.discard((apikey.metadata.namespace, apikey.metadata.name))
        if stale:
            await self._keys.refresh(stale)
        slots = asyncio.Semaphore(PATCH_CONCURRENCY)
        now_ms = await state.store.now_ms()
        objects: list[ApiKey | Team] = [*indexes.keys.everywhere(), *indexes.teams.everywhere()]
        sampled: set[ScopeRef] = set()
        for start in range(0, len(objects), BATCH_SIZE):
            batch = objects[start : start + BATCH_SIZE]
            subjects = [s for obj in batch if (s := _subject(state, obj)) is not None]
            sampled.update(subject.counted[0].ref for subject in subjects if subject.counted)
            await self._sync_batch(subjects, now_ms, slots)
            await asyncio.sleep(0)  # let watch events in between batches
        for gone in state.spend_samples.keys() - sampled:  # deleted, or without a budget
            del state.spend_samples[gone]
        await self._overrides.record_expiries(datetime.fromtimestamp(now_ms / 1000, tz=UTC))
        references: list[Budget | RateLimit] = [
            *indexes.budgets.everywhere(),
            *indexes.rate_limits.everywhere(),
        ]
        for start in range(0, len(references), BATCH_SIZE):
            await asyncio.gather(
                *(
                    _guarded(obj, partial(self._sync_reference, obj, slots))
                    for obj in references[start : start + BATCH_SIZE]
                )
            )
            await asyncio.sleep(0)

    async def _sync_batch(
        self, subjects: list[Subject], now_ms: int, slots: asyncio.Semaphore
    ) -> None:
        """One Redis round trip for the counters of `subjects`, then their patches."""
        store = self._state.store
        refs = [ref for subject in subjects for ref in subject.refs]
        counters = await store.read_budgets(refs) if refs else []
        windows = [item.counter for subject in subjects for item in subject.further]
        window_counters = await store.read_window_budgets(windows) if windows else []
        by_subject: list[tuple[list[BudgetCounter], list[BudgetCounter]]] = []
        offset = window_offset = 0
        for subject in subjects:
            end, window_end = offset + len(subject.refs), window_offset + len(subject.further)
            by_subject.append((counters[offset:end], window_counters[window_offset:window_end]))
            offset, window_offset = end, window_end
        await asyncio.gather(
            *(
                _guarded(subject.obj, partial(self._sync_subject, subject, *read, now_ms, slots))
                for subject, read in zip(subjects, by_subject, strict=True)
            )
        )

    async def _sync_subject(
        self,
        subject: Subject,
        counters: Sequence[BudgetCounter],
        window_counters: Sequence[BudgetCounter],
        now_ms: int,
        slots: asyncio.Semaphore,
    ) -> None:
        """Patch one Team's or ApiKey's status if it differs; post the Events it implies."""
        state = self._state
        counted = len(subject.counted)
        async with slots:
            views = await self._views(subject, counters[:counted], now_ms)
            further = _further_views(subject, window_counters, now_ms)
            guards = _guard_views(subject, counters[counted:], further, now_ms)
            own_windows = [
                view for item, view in zip(subject.further, further, strict=True) if not item.guard
            ]
            fields, observations = _fields_and_observations(
                state, subject, views, guards, now_ms, own_windows=own_windows
            )
            if isinstance(subject.obj, Team):
                # Repairs a workload policy lost with Redis or whose write failed.
                await self._workloads.apply(subject.obj)
                # Only a Team that selects workloads shows their spend (null removes the
                # field when its workloadSelector goes).
                fields["workloadSpend"] = (
                    await self._workloads.spend(subject.obj, now_ms)
                    if subject.obj.spec.workload_selector is not None
                    else None
                )
            await self._status.write(
                KubeObject.of(subject.obj),
                subject.status,
                fields,
                observations,
                now=datetime.fromtimestamp(now_ms / 1000, tz=UTC),
            )

    async def _views(
        self, subject: Subject, counters: Sequence[BudgetCounter], now_ms: int
    ) -> list[BudgetView]:
        """The subject's counters as views; remembers seeds and tells about a window reset.

        One BudgetReset Event per subject per reset, and only when the window that ended
        had spend (its own counter's, or a member's): a boundary with nothing spent is no
        news.
        """
        state = self._state
        views: list[BudgetView] = []
        ended: list[int | None] = []
        for counted, stored in zip(subject.counted, counters, strict=True):
            counter = stored
            if counter.window_start_ms is None:
                counter = await _restore_missing(state, counted, now_ms) or counter
            view = budget_view(counted.limits, counter, now_ms)
            ended.append(ended_spend(state.seeds.get(counted.ref), view))
            state.seeds[counted.ref] = Seed(view.window, view.spend_nanos, view.model_spend_nanos)
            views.append(view)
        told = reset_worth_telling(ended)
        if told is not None:
            obj = subject.obj
            BUDGET_RESETS.labels(namespace=obj.metadata.namespace, kind=obj.kind).inc()
            message = f"budget window reset; {usd(told):g} USD was spent in the window that ended"
            await self._status.post_event(KubeObject.of(obj), "Normal", "BudgetReset", message)
        return views

    async def _sync_reference(self, obj: Budget | RateLimit, slots: asyncio.Semaphore) -> None:
        shown = obj.status.model_dump(by_alias=True, mode="json") if obj.status else {}
        async with slots:
            await self._references.write_reference_status(obj, shown)
