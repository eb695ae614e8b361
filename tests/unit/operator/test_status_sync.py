"""The status-sync loop against fakes: counters read in batches, Events through our client."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, cast

import pytest

from llmquota.models import ApiKey
from llmquota.operator.config import OperatorConfig
from llmquota.operator.factory import Factory
from llmquota.operator.services.status_sync import BATCH_SIZE
from llmquota.operator.state import Indexes, KeyRecord, OperatorState
from llmquota.operator.storage.kubernetes import KubeObject, KubernetesStorage
from llmquota.policy.resolve import NamespaceObjects, resolve_key_policy
from llmquota.store import BudgetCounter, QuotaStore

NOW_MS = 1_800_000_000_000


class FakeStore:
    """Counters of 0 spend in the current (never-ending) window; counts round trips."""

    def __init__(self) -> None:
        self.round_trips: list[int] = []

    async def now_ms(self) -> int:
        return NOW_MS

    async def read_budgets(self, scopes: Iterable[tuple[str, str]]) -> list[BudgetCounter]:
        refs = list(scopes)
        self.round_trips.append(len(refs))
        return [BudgetCounter(0, 0, 0, {}) for _ in refs]


class FakeKube:
    def __init__(self) -> None:
        self.patched: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []

    async def patch_status(self, obj: KubeObject, status_patch: Mapping[str, Any]) -> None:
        self.patched[obj.name] = dict(status_patch)

    async def post_event(self, obj: KubeObject, type_: str, reason: str, message: str) -> None:
        self.events.append((obj.name, type_, reason))


def apikey(name: str, *, blocked: bool = False) -> ApiKey:
    return ApiKey.model_validate(
        {
            "kind": "ApiKey",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
            "spec": {"budget": {"maxBudget": 5}, "blocked": blocked},
        }
    )


def indexes_of(keys: list[ApiKey]) -> Indexes:
    return Indexes.of(
        {
            "llmquota_teams": {},
            "llmquota_apikeys": {"ns": keys},
            "llmquota_budgets": {},
            "llmquota_ratelimits": {},
            "llmquota_budgetoverrides": {},
            "llmquota_apikeys_by_team": {},
            "llmquota_apikeys_by_secret": {},
        }
    )


def state_with(keys: list[ApiKey], store: FakeStore, kube: FakeKube) -> OperatorState:
    """An operator that has applied `keys` (their policies are known)."""
    state = OperatorState(
        config=OperatorConfig(redis_url="redis://unused"),
        store=cast("QuotaStore", store),
        kubernetes=cast("KubernetesStorage", kube),
        indexes=indexes_of(keys),
    )
    for key in keys:
        key_hash = f"hash-{key.metadata.name}"
        policy = resolve_key_policy(key, key_hash, None, NamespaceObjects({}, {}), None)
        state.keys[("ns", key.metadata.name)] = KeyRecord(key_hash, policy, "sk-...0000")
    return state


async def test_counters_are_read_in_batches_and_every_status_written() -> None:
    store, kube = FakeStore(), FakeKube()
    keys = [apikey(f"k{i}") for i in range(BATCH_SIZE * 2 + 5)]
    await Factory(state_with(keys, store, kube)).status_sync.sync_once()
    assert store.round_trips == [BATCH_SIZE, BATCH_SIZE, 5]
    assert len(kube.patched) == len(keys)
    status = kube.patched["k0"]
    assert (status["spend"], status["maxBudget"], status["remaining"]) == (0, 5, 5)
    assert kube.events == []  # a healthy first observation is not news


async def test_keys_not_applied_yet_are_left_alone_and_flips_become_events() -> None:
    store, kube = FakeStore(), FakeKube()
    state = state_with([apikey("blocked", blocked=True)], store, kube)
    state.indexes = indexes_of([apikey("blocked", blocked=True), apikey("new")])
    await Factory(state).status_sync.sync_once()
    assert set(kube.patched) == {"blocked"}
    assert kube.events == [("blocked", "Warning", "Blocked")]


class CancelledMidPass(FakeStore):
    """Reads the counters, then the operator stops: the pass is cancelled at its next await.

    That await is the one that waits for the batch's patches, before any of them ran.
    """

    async def read_budgets(self, scopes: Iterable[tuple[str, str]]) -> list[BudgetCounter]:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        return await super().read_budgets(scopes)


async def test_a_pass_cancelled_before_its_patches_ran_leaves_no_coroutine_behind() -> None:
    store, kube = CancelledMidPass(), FakeKube()
    sync = Factory(state_with([apikey("a"), apikey("b")], store, kube)).status_sync
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(sync.sync_once())
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    assert kube.patched == {}
