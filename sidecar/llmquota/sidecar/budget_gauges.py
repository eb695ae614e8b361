"""What is left of every budget a sidecar serves, and soft-budget crossings.

The admit script answers with the tightest budget only, so the gauges are read from the
budget counters themselves, off the request path: each admission notes its scopes, and a
refresher reads them in one pipelined round trip, soon after requests (at most every
`MIN_GAP_S`) and every `REFRESH_S` without any (a window's reset, other replicas' spend).
A soft budget's crossing is counted and logged once per window by each sidecar that
sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from llmquota.policy.limits import BudgetLimits, Scope, WindowLimits, usd
from llmquota.sidecar.metrics import SidecarMetrics
from llmquota.store import BudgetCounter, QuotaStore, StoreError

__all__ = ["BudgetGauges", "subject_labels"]

logger = logging.getLogger(__name__)

REFRESH_S = 5.0
MIN_GAP_S = 0.2
# End users come and go with request bodies: those seen this recently are re-read, and
# at most this many are remembered (for their crossings), the least recent dropped first.
END_USER_RECENT_S = 10.0
MAX_END_USERS = 1024
_END_USER = "/user/"
# Configured scope objects remembered as noted (each key's policy has its own); past
# this many, from policies since replaced, they are forgotten and noted again.
MAX_SEEN_SCOPES = 4096


@dataclass
class _Watched:
    """One budget scope as the gauges name it, and what was already reported of it."""

    tag: str
    scope_id: str
    kind: str
    namespace: str
    name: str
    end_user: str | None
    budget: BudgetLimits
    seen_s: float = 0.0
    crossed_window_ms: int | None = None  # start of the window whose crossing was reported


def subject_labels(scope: Scope) -> tuple[str, str, str]:
    """A scope's `namespace, kind, name` labels: `team/ns/qa` -> team qa; `member/ns/qa/ana`
    -> member qa/ana; `workload/ns/qa/deployment/drafter` -> workload qa/deployment/drafter
    (admission counts it as a key's scope; the labels say what it is); an end user's scope
    (`<owner id>/user/<user>`) is named after its owner, the Team or ApiKey, never after
    the user (labels stay low-cardinality)."""
    owner_id = scope.id.partition(_END_USER)[0]
    prefix, namespace, name = owner_id.split("/", 2)
    return namespace, "workload" if prefix == "workload" else scope.kind, name


def _watched(scope: Scope, budget: BudgetLimits) -> _Watched:
    namespace, kind, name = subject_labels(scope)
    return _Watched(
        tag=scope.tag,
        scope_id=scope.id,
        kind=kind,
        namespace=namespace,
        name=name,
        end_user=scope.id.partition(_END_USER)[2] or None,
        budget=budget,
    )


class BudgetGauges:
    """`llmquota_remaining_budget_usd`, `llmquota_soft_budget_exceeded` and the crossings
    counter for the budget scopes this sidecar's requests count against."""

    def __init__(self, store: QuotaStore, metrics: SidecarMetrics) -> None:
        """Read counters from `store` into `metrics`."""
        self._store = store
        self._metrics = metrics
        self._scopes: dict[str, _Watched] = {}  # configured scopes, by scope id
        self._seen: dict[int, Scope] = {}  # configured scope objects noted, by id()
        self._end_users: OrderedDict[str, _Watched] = OrderedDict()
        self._touched = asyncio.Event()

    def watch(self, scopes: Iterable[Scope]) -> None:
        """Note the scopes one request was checked against (cheap: on the request path).

        A configured scope comes with every request of a key as the same object, until
        the key's policy changes (`PolicyCache`), so one already noted as this very
        object is passed over after a dict lookup. An end user's scope is made per
        request, and when it was last seen matters: it is always noted."""
        seen = self._seen
        for scope in scopes:
            if seen.get(id(scope)) is not scope:
                self._note(scope)
        self._touched.set()

    def _note(self, scope: Scope) -> None:
        """Watch a scope with a budget, replacing what a changed policy said of it."""
        budget = scope.budget
        end_user = scope.kind == "end_user"
        if not end_user:
            if len(self._seen) >= MAX_SEEN_SCOPES:  # policies replaced many times over
                self._seen.clear()
            self._seen[id(scope)] = scope
        if budget is None or (budget.max_nanos < 0 and budget.soft_nanos is None):
            return
        found = self._end_users if end_user else self._scopes
        watched = found.get(scope.id)
        if watched is None:
            watched = found[scope.id] = _watched(scope, budget)
        watched.budget = budget
        if end_user:
            watched.seen_s = time.monotonic()
            self._end_users.move_to_end(scope.id)
            if len(self._end_users) > MAX_END_USERS:
                self._end_users.popitem(last=False)

    def touch(self) -> None:
        """Counters changed (a request settled): refresh soon."""
        self._touched.set()

    async def refresh(self, now_ms: int) -> None:
        """Read every watched counter and set the metrics from it."""
        recent_s = time.monotonic() - END_USER_RECENT_S
        watched = [
            *self._scopes.values(),
            *(user for user in self._end_users.values() if user.seen_s >= recent_s),
        ]
        if not watched:
            return
        counters = await self._store.read_budgets((w.tag, w.scope_id) for w in watched)
        for scope, counter in zip(watched, counters, strict=True):
            self._show(scope, counter, now_ms)
        further = [
            (scope, window)
            for scope in watched
            if scope.end_user is None
            for window in scope.budget.windows
        ]
        if further:
            window_counters = await self._store.read_window_budgets(
                (scope.tag, scope.scope_id, window.window) for scope, window in further
            )
            for (scope, window), counter in zip(further, window_counters, strict=True):
                self._show_remaining(scope, window, counter, now_ms)

    def _show_remaining(
        self, scope: _Watched, window: WindowLimits, counter: BudgetCounter, now_ms: int
    ) -> None:
        """`remaining_budget_usd` of one window of the scope's budget (its own counter)."""
        budget = scope.budget
        max_nanos = budget.raise_max(window.max_nanos, now_ms)
        if max_nanos < 0:
            return
        current = counter.window_start_ms == budget.period_at(window.window, now_ms).start_ms
        used = counter.spend_nanos + counter.reserved_nanos if current else 0
        enforcement = "Audit" if budget.audit else "Enforce"
        labels = (scope.namespace, scope.kind, scope.name, window.duration, enforcement)
        self._metrics.remaining_budget.labels(*labels).set(usd(max(0, max_nanos - used)))

    def _show(self, scope: _Watched, counter: BudgetCounter, now_ms: int) -> None:
        budget = scope.budget
        window = budget.window_at(now_ms)
        current = counter.window_start_ms == window.start_ms
        spend = counter.spend_nanos if current else 0
        soft = budget.soft_nanos
        labels = (scope.namespace, scope.kind, scope.name)
        if scope.end_user is None:
            main = WindowLimits(max_nanos=budget.max_nanos, window=budget.window)
            self._show_remaining(scope, main, counter, now_ms)
            if soft is not None:
                self._metrics.soft_budget_exceeded.labels(*labels).set(int(spend >= soft))
        if soft is None or spend < soft or scope.crossed_window_ms == window.start_ms:
            return
        scope.crossed_window_ms = window.start_ms
        self._metrics.soft_budget_crossings.labels(*labels).inc()
        logger.warning(
            "soft budget crossed",
            extra={
                "namespace": scope.namespace,
                "scope_kind": scope.kind,  # `name` is LogRecord's own
                "scope_name": scope.name,
                "end_user": scope.end_user,
                "window": budget.duration,
                "spend_usd": usd(spend),
                "soft_budget_usd": usd(soft),
            },
        )

    async def refresh_forever(self) -> None:
        """Refresh after requests, and every REFRESH_S without any, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._touched.wait(), REFRESH_S)
            self._touched.clear()
            try:
                await self.refresh(int(time.time() * 1000))
            except StoreError as error:
                logger.debug("cannot read budget counters for the gauges: %s", error)
            await asyncio.sleep(MIN_GAP_S)
