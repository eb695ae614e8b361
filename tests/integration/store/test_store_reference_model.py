"""The admit/settle/abort scripts against a plain-Python reference of the same rules.

Random sequences of admissions (by two keys of one team), settlements, aborts and clock
moves run both on the Lua (real Redis, injected clock) and on a dict-based model written
from the documented rules: a budget refuses once spend plus reservations reach its max; at
a budget shared with the other key (the team's) one key may hold in flight at most
KEY_SHARE of what the spend and the other key's reservations leave, a request that does
not fit holding just that when the key holds nothing there and no other capped request
is in flight there, and refused otherwise; amounts are held to
MAX_AMOUNT; counters count one window and stale ones are zero, rpm/tpm count per minute,
settlement replaces the estimate with the real cost in the current window. Outcomes (which
request is admitted, which scope and limit refuse it) and the budget counters must agree
at every step.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integration.store.scenario import CENT, ManualClock, api_key, policy_for, team
from tests.support.redis_server import RedisEndpoint, flush

from llmquota.policy.admission import KEY_SHARE, MAX_AMOUNT, RequestEstimate, admission_call
from llmquota.policy.decision import Admitted, interpret_admit
from llmquota.policy.limits import ResolvedPolicy, Scope
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 31, 23, 58, 30, tzinfo=UTC)  # near a month's and a minute's end
CREATED = datetime(2026, 3, 31, 22, 17, 41, tzinfo=UTC)
LEASE_MS = 10**12  # leases never expire here: sweeps are tested on their own
MINUTE_MS = 60_000


@dataclass
class Counter:
    """A counter as the scripts keep it: the window it counts and its sums."""

    win: int | None = None
    spend: int = 0
    resv: int = 0
    req: int = 0
    tok: int = 0
    held: dict[str, int] = field(default_factory=dict)  # key hash -> its reservations
    capped: bool = False  # a request holding less than its worst case is in flight

    def roll(self, win: int) -> None:
        if self.win != win:
            self.win, self.spend, self.resv, self.req, self.tok = win, 0, 0, 0, 0
            self.held, self.capped = {}, False


@dataclass
class Lease:
    """What an admitted request holds in the reference model."""

    key: str
    cost: int
    tokens: int
    budget_windows: dict[str, int] = field(default_factory=dict)  # scope id -> win
    budget_holds: dict[str, int] = field(default_factory=dict)  # scope id -> nano-USD held
    capped: list[str] = field(default_factory=list)
    rate_windows: dict[str, int] = field(default_factory=dict)
    parallel: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)  # scope ids where `key` holds its share


class Reference:
    """The admission rules over dicts, written from the documentation, not the Lua.

    Counters are kept by scope id, so the team's are the same for both keys.
    """

    def __init__(self) -> None:
        self.scopes: dict[str, Scope] = {}
        self.budgets: dict[str, Counter] = {}
        self.rates: dict[str, Counter] = {}
        self.in_flight: dict[str, int] = {}
        self.leases: dict[str, Lease] = {}

    def _window(self, scope: Scope, now: int) -> tuple[int, int]:
        assert scope.budget is not None
        window = scope.budget.window_at(now)
        return window.start_ms, window.end_ms

    def admit(
        self, policy: ResolvedPolicy, request_id: str, cost: int, tokens: int, now: int
    ) -> tuple[Any, ...]:
        cost, tokens = min(cost, MAX_AMOUNT), min(tokens, MAX_AMOUNT)
        key = policy.key_hash
        minute = now // MINUTE_MS
        holds: dict[str, int] = {}
        capped: list[str] = []
        for index, scope in enumerate(policy.scopes):
            self.scopes[scope.id] = scope
            self.budgets.setdefault(scope.id, Counter())
            self.rates.setdefault(scope.id, Counter())
            self.in_flight.setdefault(scope.id, 0)
            if scope.budget is not None and scope.budget.max_nanos >= 0:
                start, _ = self._window(scope, now)
                counter = self.budgets[scope.id]
                current = counter.win == start
                spend, resv = (counter.spend, counter.resv) if current else (0, 0)
                held = counter.held.get(key, 0) if current else 0
                if spend + resv >= scope.budget.max_nanos:
                    return (index, "max_budget")
                others_leave = scope.budget.max_nanos - spend - (resv - held)
                share = math.floor(KEY_SHARE * others_leave)
                holds[scope.id] = cost
                if scope.kind != "key" and held + cost > share:
                    if held > 0 or (current and counter.capped):
                        return (index, "key_share")
                    holds[scope.id] = share
                    capped.append(scope.id)
            if scope.rate is not None:
                rate = self.rates[scope.id]
                req, tok = (rate.req, rate.tok) if rate.win == minute else (0, 0)
                if scope.rate.rpm is not None and req >= scope.rate.rpm:
                    return (index, "rpm")
                if scope.rate.tpm is not None and tok >= scope.rate.tpm:
                    return (index, "tpm")
                limit = scope.rate.max_parallel
                if limit is not None and self.in_flight[scope.id] >= limit:
                    return (index, "max_parallel_requests")
        lease = Lease(key, cost, tokens, capped=capped)
        for scope in policy.scopes:
            if scope.budget is not None:
                start, _ = self._window(scope, now)
                counter = self.budgets[scope.id]
                counter.roll(start)
                hold = holds.get(scope.id, cost)  # a count-only budget holds the cost
                counter.resv += hold
                counter.capped = counter.capped or scope.id in capped
                lease.budget_windows[scope.id] = start
                lease.budget_holds[scope.id] = hold
                if scope.kind != "key" and hold > 0:
                    counter.held[key] = counter.held.get(key, 0) + hold
                    lease.shared.append(scope.id)
            if scope.rate is not None:
                self.rates[scope.id].roll(minute)
                self.rates[scope.id].req += 1
                self.rates[scope.id].tok += tokens
                lease.rate_windows[scope.id] = minute
                if scope.rate.max_parallel is not None:
                    self.in_flight[scope.id] += 1
                    lease.parallel.append(scope.id)
        self.leases[request_id] = lease
        return ("admitted",)

    def release(self, request_id: str, cost: int, tokens: int, now: int) -> int:
        lease = self.leases.pop(request_id, None)
        if lease is None:
            return 0
        cost, tokens = min(cost, MAX_AMOUNT), min(tokens, MAX_AMOUNT)
        for scope_id, win in lease.budget_windows.items():
            start, _ = self._window(self.scopes[scope_id], now)
            counter = self.budgets[scope_id]
            if win == start and counter.win == win:
                hold = lease.budget_holds[scope_id]
                counter.resv -= hold
                if scope_id in lease.shared:
                    counter.held[lease.key] -= hold
                    if counter.held[lease.key] <= 0:
                        del counter.held[lease.key]
                if scope_id in lease.capped:
                    counter.capped = False
            if cost > 0:
                counter.roll(start)
                counter.spend += cost
        minute = now // MINUTE_MS
        for scope_id, win in lease.rate_windows.items():
            rate = self.rates[scope_id]
            if win == minute and rate.win == win:
                rate.tok += tokens - lease.tokens
            elif tokens > 0:
                rate.roll(minute)
                rate.tok += tokens
        for scope_id in lease.parallel:
            self.in_flight[scope_id] = max(0, self.in_flight[scope_id] - 1)
        return 1


BUDGETS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "maxBudget": st.sampled_from([0, 0.01, 0.02, 0.03, 0.05]),
            "budgetDuration": st.sampled_from(["90s", "1m", "1h", "monthly"]),
        }
    ),
)
TEAM_RATES = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "rpm": st.integers(min_value=0, max_value=4),
            "tpm": st.integers(min_value=0, max_value=150),
        },
    ),
)
KEY_RATES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"maxParallelRequests": st.integers(min_value=0, max_value=3)}),
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("admit"),
            st.sampled_from([0, 1, 2, 3, 10**9]),  # cents; 1e16 nano-USD is past MAX_AMOUNT
            st.integers(min_value=0, max_value=60),  # tokens
            st.integers(min_value=0, max_value=1),  # which key
        ),
        st.tuples(
            st.sampled_from(["settle", "abort"]),
            st.integers(min_value=0, max_value=20),  # which request
            st.integers(min_value=0, max_value=3),
            st.integers(min_value=0, max_value=60),
        ),
        st.tuples(
            st.just("advance"),
            st.sampled_from([1, 499, 20_000, 60_000, 3_600_000, 40 * 86_400_000]),
        ),
    ),
    max_size=30,
)


def policies_of(
    team_budget: dict[str, Any] | None,
    team_rate: dict[str, Any] | None,
    key_budget: dict[str, Any] | None,
    key_rate: dict[str, Any] | None,
) -> list[ResolvedPolicy]:
    """Two keys of team t with the same limits each."""
    team_spec: dict[str, Any] = {}
    if team_budget is not None:
        team_spec["budget"] = team_budget
    if team_rate is not None:
        team_spec["rateLimit"] = team_rate
    key_spec: dict[str, Any] = {"team": "t"}
    if key_budget is not None:
        key_spec["budget"] = key_budget
    if key_rate is not None:
        key_spec["rateLimit"] = key_rate
    shared_team = team("t", created=CREATED, **team_spec)
    return [
        policy_for(api_key(name, created=CREATED, **key_spec), shared_team) for name in ("k", "k2")
    ]


async def run_against_reference(
    url: str,
    policies: list[ResolvedPolicy],
    operations: list[tuple[Any, ...]],
    *,
    empty_counts_as_absent: bool = False,
    failover: Callable[[], Awaitable[None]] | None = None,
    **store_options: Any,
) -> None:
    """Run `operations` on the store at `url` and on the reference; they must agree.

    `empty_counts_as_absent`: a counter holding nothing (no spend, no reservation) equals
    one that does not exist, whatever window it names. On a Cluster a slot that reserved
    and was then freed, because a later slot refused, leaves such a counter behind.
    `failover`: what a ("failover",) operation does (a Sentinel group promotes its
    replica); `store_options` go to `QuotaStore.from_url`."""
    clock = ManualClock(START)
    reference = Reference()
    store = QuotaStore.from_url(url, clock_ms=clock, **store_options)
    issued: list[str] = []
    try:
        for step, operation in enumerate(operations):
            name = operation[0]
            if name == "advance":
                clock.advance(operation[1])
                continue
            if name == "failover":
                assert failover is not None
                await failover()
                continue
            if name == "admit":
                request_id = uuid.uuid4().hex
                policy = policies[operation[3]]
                call = admission_call(
                    policy,
                    RequestEstimate("m", operation[1] * CENT, operation[2]),
                    request_id,
                    LEASE_MS,
                )
                raw = await store.admit(call)
                decision = interpret_admit(raw, call)
                got: tuple[Any, ...] = (
                    ("admitted",)
                    if isinstance(decision, Admitted)
                    else (int(raw[1]), decision.limit)
                )
                expected = reference.admit(
                    policy, request_id, operation[1] * CENT, operation[2], clock()
                )
                issued.append(request_id)
            else:
                if not issued:
                    continue
                request_id = issued[operation[1] % len(issued)]
                cost, tokens = operation[2] * CENT, operation[3]
                if name == "settle":
                    got = (await store.settle(request_id, cost, tokens),)
                    expected = (reference.release(request_id, cost, tokens, clock()),)
                else:
                    got = (await store.abort(request_id),)
                    expected = (reference.release(request_id, 0, 0, clock()),)
            assert got == expected, f"step {step} {operation}"
            await _compare_budgets(store, reference, step, empty_counts_as_absent)
    finally:
        await store.close()


async def _compare_budgets(
    store: QuotaStore, reference: Reference, step: int, empty_counts_as_absent: bool
) -> None:
    scopes = list(reference.scopes.values())
    counters = await store.read_budgets([(scope.tag, scope.id) for scope in scopes])
    for scope, counter in zip(scopes, counters, strict=True):
        model = reference.budgets[scope.id]
        got = (counter.window_start_ms, counter.spend_nanos, counter.reserved_nanos)
        expected = (model.win, model.spend, model.resv)
        if empty_counts_as_absent:
            got, expected = (_shown(got), _shown(expected))
        assert got == expected, f"step {step}, scope {scope.id}"


def _shown(counter: tuple[int | None, int, int]) -> tuple[int | None, int, int]:
    """A counter that holds nothing, as if it did not exist."""
    return (None, 0, 0) if counter[1:] == (0, 0) else counter


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    team_budget=BUDGETS,
    team_rate=TEAM_RATES,
    key_budget=BUDGETS,
    key_rate=KEY_RATES,
    operations=OPERATIONS,
)
def test_lua_admission_matches_the_reference_model(
    redis_server: RedisEndpoint,
    team_budget: dict[str, Any] | None,
    team_rate: dict[str, Any] | None,
    key_budget: dict[str, Any] | None,
    key_rate: dict[str, Any] | None,
    operations: list[tuple[Any, ...]],
) -> None:
    flush(redis_server.url)
    policies = policies_of(team_budget, team_rate, key_budget, key_rate)
    asyncio.run(run_against_reference(redis_server.url, policies, operations))
