"""Several windows per budget, calendar windows in a time zone and audited scopes, in the
admit and settle scripts on a real redis-server, with the store's clock driven by the
test: every window is checked and reserved in the one admission, a refusal names the
window that refused with its own reset, a day in Berlin lasts 23 or 25 hours at the
daylight-saving changes, and an audited scope counts like an enforced one but admits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from tests.integration.store.scenario import (
    CENT,
    ManualClock,
    api_key,
    attempt,
    budget,
    budget_override,
    epoch_ms,
    policy_for,
    rate_limit,
    team,
)

from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.limits import ResolvedPolicy, Scope
from llmquota.store import QuotaStore
from llmquota.store.scripts import script_source

pytestmark = pytest.mark.integration

BERLIN = ZoneInfo("Europe/Berlin")
CREATED = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


async def spend(store: QuotaStore, policy: ResolvedPolicy, times: int) -> int:
    """Admit and settle up to `times` one-cent requests; how many were admitted."""
    for admitted in range(times):
        outcome = await attempt(store, policy)
        if not outcome.admitted:
            return admitted
        assert await store.settle(outcome.request_id, CENT, 100) == 1
    return times


def own_scope(policy: ResolvedPolicy) -> Scope:
    return next(scope for scope in policy.scopes if scope.kind == "key")


async def window_spend(store: QuotaStore, scope: Scope, index: int) -> int:
    """Spend in the scope's budget window `index` (0: the main one)."""
    assert scope.budget is not None
    if index == 0:
        (counter,) = await store.read_budgets([(scope.tag, scope.id)])
    else:
        window = scope.budget.windows[index - 1].window
        (counter,) = await store.read_window_budgets([(scope.tag, scope.id, window)])
    return counter.spend_nanos


async def test_a_request_must_fit_every_window_and_the_refusal_names_the_one_that_refused(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    clock.set(start + timedelta(minutes=50))
    key = api_key(
        "windows",
        created=start - timedelta(days=3),
        budget={
            "maxBudget": 0.05,
            "budgetDuration": "30d",
            "windows": [{"maxBudget": 0.02, "budgetDuration": "1h"}],
        },
    )
    policy = policy_for(key)
    scope = own_scope(policy)

    assert await spend(clocked_store, policy, 5) == 2  # the hour's two cents
    refusal = (await attempt(clocked_store, policy)).refusal
    assert (refusal.status, refusal.limit) == (402, "max_budget")
    assert refusal.message.startswith("Budget has been exceeded for key windows (1h window):")
    assert "max budget 0.02" in refusal.message
    assert refusal.headers == {"Retry-After": str(10 * 60)}  # the hour's end, 13:00
    assert [await window_spend(clocked_store, scope, i) for i in (0, 1)] == [2 * CENT, 2 * CENT]

    clock.set(start + timedelta(hours=1))  # the hour resets; the 30 days do not
    assert await spend(clocked_store, policy, 5) == 2
    clock.set(start + timedelta(hours=2))
    assert await spend(clocked_store, policy, 5) == 1  # the main window's fifth cent
    refusal = (await attempt(clocked_store, policy)).refusal
    assert refusal.message.startswith("Budget has been exceeded for key windows: spend 0.05")
    assert await window_spend(clocked_store, scope, 0) == 5 * CENT


async def test_a_refused_window_reserves_nothing_in_the_others(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    key = api_key(
        "atomic",
        budget={"maxBudget": 1, "windows": [{"maxBudget": 0.01, "budgetDuration": "1d"}]},
    )
    policy = policy_for(key)
    held = await attempt(clocked_store, policy)  # holds the day's cent in flight
    assert held.admitted
    assert not (await attempt(clocked_store, policy)).admitted
    [main] = await clocked_store.read_budgets([(own_scope(policy).tag, own_scope(policy).id)])
    assert main.reserved_nanos == CENT  # the refused request held nothing there
    assert await clocked_store.settle(held.request_id, CENT // 2, 10) == 1
    assert await spend(clocked_store, policy, 3) == 1  # half a cent left in the day


async def test_an_override_raises_every_window(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    key = api_key(
        "raised",
        budget={
            "maxBudget": 0.02,
            "budgetDuration": "30d",
            "windows": [{"maxBudget": 0.01, "budgetDuration": "daily"}],
        },
    )
    override = budget_override(
        "launch",
        target={"kind": "ApiKey", "name": "raised"},
        increase=0.03,
        expires=(datetime.fromtimestamp(clock() / 1000, UTC) + timedelta(hours=1)).isoformat(),
        reason="launch week",
    )
    assert await spend(clocked_store, policy_for(key), 5) == 1
    # The daily window's cap rises by the increase too: 1 + 3 cents a day, 2 + 3 in all.
    assert await spend(clocked_store, policy_for(key, overrides=[override]), 5) == 3


async def test_team_windows_are_checked_for_every_key_of_the_team(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    tier = budget("tier", maxBudget=1, windows=[{"maxBudget": 0.03, "budgetDuration": "weekly"}])
    squad = team("squad", budgetRef={"name": "tier"})
    first = policy_for(api_key("first", team="squad"), squad, budgets=[tier])
    second = policy_for(api_key("second", team="squad"), squad, budgets=[tier])
    assert await spend(clocked_store, first, 2) == 2
    assert await spend(clocked_store, second, 5) == 1
    refusal = (await attempt(clocked_store, first)).refusal
    assert "team squad (weekly window)" in refusal.message


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-15", 24)],
)
async def test_a_daily_window_in_berlin_resets_at_its_midnight(
    clocked_store: QuotaStore, clock: ManualClock, day: str, hours: int
) -> None:
    midnight = datetime.fromisoformat(day).replace(tzinfo=BERLIN)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=BERLIN)
    key = api_key(
        "berliner",
        budget={"maxBudget": 0.01, "budgetDuration": "daily", "timeZone": "Europe/Berlin"},
    )
    policy = policy_for(key)
    clock.set(midnight.astimezone(UTC) + timedelta(minutes=1))
    assert await spend(clocked_store, policy, 3) == 1
    refusal = (await attempt(clocked_store, policy)).refusal
    length_s = int((next_midnight.astimezone(UTC) - midnight.astimezone(UTC)).total_seconds())
    assert length_s == hours * 3600
    assert refusal.headers == {"Retry-After": str(length_s - 60)}
    clock.set(next_midnight.astimezone(UTC) - timedelta(milliseconds=1))
    assert not (await attempt(clocked_store, policy)).admitted
    clock.set(next_midnight.astimezone(UTC))
    assert await spend(clocked_store, policy, 3) == 1


async def test_a_calendar_window_follows_redis_clock_not_the_callers(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    """The boundaries are computed around the caller's clock; the script picks the window
    of its own clock among them, so a caller an hour behind still resets at midnight."""
    key = api_key("skewed", budget={"maxBudget": 0.01, "budgetDuration": "daily"})
    policy = policy_for(key)
    midnight = datetime(2026, 3, 11, tzinfo=UTC)
    clock.set(midnight - timedelta(minutes=30))
    assert await spend(clocked_store, policy, 3) == 1
    assert not (await attempt(clocked_store, policy)).admitted

    call = admission_call(policy, RequestEstimate("gpt-4o-mini", CENT, 10), "skewed-1", 30_000)
    lagging = call.script_call(epoch_ms(midnight - timedelta(hours=1)))
    clock.set(midnight + timedelta(seconds=1))  # Redis is past midnight
    answer = await clocked_store.redis.eval(
        script_source("admit"), len(lagging.keys), *lagging.keys, lagging.spec_json, clock.now_ms
    )
    assert int(answer[0]) == 1  # the new day's cent


async def test_a_settle_after_the_day_ends_charges_the_new_day(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    key = api_key(
        "late", budget={"maxBudget": 1, "budgetDuration": "daily", "timeZone": "Asia/Tokyo"}
    )
    policy = policy_for(key)
    scope = own_scope(policy)
    midnight = datetime(2026, 3, 11, tzinfo=ZoneInfo("Asia/Tokyo")).astimezone(UTC)
    clock.set(midnight - timedelta(minutes=5))
    outcome = await attempt(clocked_store, policy)
    clock.set(midnight + timedelta(minutes=5))
    assert await clocked_store.settle(outcome.request_id, 3 * CENT, 10) == 1
    (counter,) = await clocked_store.read_budgets([(scope.tag, scope.id)])
    assert (counter.window_start_ms, counter.spend_nanos) == (epoch_ms(midnight), 3 * CENT)
    assert counter.reserved_nanos == 0


async def test_an_audited_budget_counts_and_reserves_but_admits(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    spec = {"maxBudget": 0.02, "budgetDuration": "30d"}
    audited = policy_for(api_key("rollout", budget={**spec, "enforcement": "Audit"}))
    scope = own_scope(audited)
    assert await spend(clocked_store, audited, 2) == 2
    outcome = await attempt(clocked_store, audited)
    assert outcome.admitted
    audit = outcome.decision.audit  # type: ignore[union-attr]
    assert audit is not None
    assert audit.scope.label == "key rollout"
    assert audit.refusal.message.startswith("Budget has been exceeded for key rollout:")
    assert audit.header.startswith("key rollout would refuse: Budget has been exceeded")
    [counter] = await clocked_store.read_budgets([(scope.tag, scope.id)])
    assert (counter.spend_nanos, counter.reserved_nanos) == (2 * CENT, CENT)  # reserved too
    assert await clocked_store.settle(outcome.request_id, CENT, 10) == 1

    # Enforce from now on: the same counter, so the window's spend is kept.
    enforced = policy_for(api_key("rollout", budget=spec))
    assert not (await attempt(clocked_store, enforced)).admitted
    assert await window_spend(clocked_store, scope, 0) == 3 * CENT


async def test_an_enforced_scope_still_refuses_beside_an_audited_one(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    squad = team("squad", budget={"maxBudget": 0.02})
    key = api_key("probe", team="squad", budget={"maxBudget": 0.01, "enforcement": "Audit"})
    policy = policy_for(key, squad)
    assert await spend(clocked_store, policy, 1) == 1
    outcome = await attempt(clocked_store, policy)
    assert outcome.admitted  # the key's audited cent is spent, the team's two are not
    assert outcome.decision.audit is not None  # type: ignore[union-attr]
    assert await clocked_store.settle(outcome.request_id, CENT, 10) == 1
    refusal = (await attempt(clocked_store, policy)).refusal
    assert "team squad" in refusal.message


async def test_an_audited_rate_limit_counts_every_request_and_admits_them(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    limits = rate_limit("watch", rpm=2, maxParallelRequests=1, enforcement="Audit")
    policy = policy_for(api_key("watched", rateLimitRef={"name": "watch"}), rate_limits=[limits])
    outcomes = [await attempt(clocked_store, policy) for _ in range(3)]
    assert all(outcome.admitted for outcome in outcomes)
    audits = [outcome.decision.audit for outcome in outcomes]  # type: ignore[union-attr]
    assert audits[0] is None
    assert audits[1] is not None
    assert audits[1].refusal.limit == "max_parallel_requests"  # the second in flight
    assert audits[2] is not None
    assert (audits[2].refusal.limit, audits[2].refusal.status) == ("rpm", 429)  # the third
    assert "requests per minute (rpm) is 2, used 2" in audits[2].refusal.message
