"""Allocation Dynamic: one rpm pool split among the keys active this minute, by priority."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.store.scenario import (
    ManualClock,
    api_key,
    attempt,
    policy_for,
    rate_limit,
    team,
)

from llmquota.models import RateLimit
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration


def pool() -> RateLimit:
    """rpm 10 as one pool: prod keys share 90% of it, dev keys 10%."""
    return rate_limit(
        "pool", rpm=10, allocation="Dynamic", priorityReservation={"prod": 0.9, "dev": 0.1}
    )


def team_key(name: str, priority: str) -> ResolvedPolicy:
    """A key of team qa, whose rate limit is the Dynamic pool."""
    qa = team("qa", rateLimitRef={"name": "pool"})
    return policy_for(api_key(name, team="qa", priority=priority), qa, rate_limits=[pool()])


async def admitted_until_refused(store: QuotaStore, policy: ResolvedPolicy) -> int:
    """How many requests the key gets before its first refusal: its share, or what is
    left of the pool (the team's rpm still caps the pool as a whole)."""
    count = 0
    while (outcome := await attempt(store, policy)).admitted:
        count += 1
        assert count <= 10, "more than the whole pool"
    assert outcome.refusal.limit in {"dynamic_rpm", "rpm"}
    return count


async def test_prod_gets_nine_and_dev_one(clocked_store: QuotaStore) -> None:
    prod, dev = team_key("prod-key", "prod"), team_key("dev-key", "dev")
    for policy in (prod, dev):  # both active in this minute
        assert (await attempt(clocked_store, policy)).admitted

    assert 1 + await admitted_until_refused(clocked_store, dev) == 1
    refused = (await attempt(clocked_store, dev)).refusal
    assert (refused.status, refused.limit, refused.scope_label) == (
        429,
        "dynamic_rpm",
        "team qa (Dynamic RateLimit pool)",
    )
    assert "share of the Dynamic rpm pool is 1, used 1" in refused.message
    assert 1 + await admitted_until_refused(clocked_store, prod) == 9


async def test_two_prod_keys_split_prods_share(clocked_store: QuotaStore) -> None:
    first, second, dev = (
        team_key("prod-a", "prod"),
        team_key("prod-b", "prod"),
        team_key("dev-key", "dev"),
    )
    for policy in (first, second, dev):
        assert (await attempt(clocked_store, policy)).admitted

    assert 1 + await admitted_until_refused(clocked_store, first) == 4  # floor(10 * 0.9 / 2)
    assert 1 + await admitted_until_refused(clocked_store, second) == 4
    assert 1 + await admitted_until_refused(clocked_store, dev) == 1


async def test_shares_are_recomputed_each_minute(
    clocked_store: QuotaStore, clock: ManualClock
) -> None:
    first, second = team_key("prod-a", "prod"), team_key("prod-b", "prod")
    for policy in (first, second):
        assert (await attempt(clocked_store, policy)).admitted
    assert 1 + await admitted_until_refused(clocked_store, first) == 4

    clock.advance(60_000)  # prod-b is idle this minute: prod-a has prod's whole share
    assert await admitted_until_refused(clocked_store, first) == 9


def own_key(name: str, priority: str, key_team: str | None = None) -> ResolvedPolicy:
    """A key that references the Dynamic pool itself (examples/dynamic-tpm's shape)."""
    spec: dict[str, Any] = {"priority": priority, "rateLimitRef": {"name": "pool"}}
    if key_team is None:
        return policy_for(api_key(name, **spec), rate_limits=[pool()])
    return policy_for(api_key(name, team=key_team, **spec), team(key_team), rate_limits=[pool()])


async def admitted_in_one_minute(store: QuotaStore, policies: list[ResolvedPolicy]) -> list[int]:
    """Requests each key gets this minute, all of them active from the start."""
    counts = [0] * len(policies)
    for index, policy in enumerate(policies):
        assert (await attempt(store, policy)).admitted, policy.key_name
        counts[index] = 1
    for index, policy in enumerate(policies):
        counts[index] += await admitted_until_refused(store, policy)
    return counts


async def test_keys_referencing_one_pool_share_it(clocked_store: QuotaStore) -> None:
    keys = [own_key("prod-a", "prod"), own_key("prod-b", "prod"), own_key("dev-key", "dev")]
    assert await admitted_in_one_minute(clocked_store, keys) == [4, 4, 1]


async def test_keys_of_different_teams_share_one_pool(clocked_store: QuotaStore) -> None:
    keys = [
        own_key("prod-a", "prod", key_team="red"),
        own_key("prod-b", "prod", key_team="blue"),
        own_key("dev-key", "dev", key_team="green"),
    ]
    assert await admitted_in_one_minute(clocked_store, keys) == [4, 4, 1]
    refused = (await attempt(clocked_store, keys[0])).refusal
    assert refused.scope_label == "key prod-a (Dynamic RateLimit pool)"


async def test_a_key_and_its_team_on_one_pool_count_once(clocked_store: QuotaStore) -> None:
    spec: dict[str, Any] = {"priority": "prod", "rateLimitRef": {"name": "pool"}}
    qa = team("qa", rateLimitRef={"name": "pool"})
    alone = policy_for(api_key("prod-a", team="qa", **spec), qa, rate_limits=[pool()])
    assert await admitted_in_one_minute(clocked_store, [alone]) == [9]
