"""The store's callers catch its own errors, never redis-py's: a store that cannot be
reached raises StoreUnavailable, one that answers with an error StoreRefused."""

from __future__ import annotations

import pytest
from tests.integration.store.scenario import api_key, attempt, policy_for
from tests.support.redis_server import loopback_port

from llmquota.policy import keyspace
from llmquota.store import QuotaStore, StoreRefused, StoreUnavailable


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_a_store_nobody_listens_for_is_unavailable(scheme: str) -> None:
    store = QuotaStore.from_url(
        f"{scheme}://127.0.0.1:{loopback_port()}", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    try:
        with pytest.raises(StoreUnavailable, match=r"Connect call failed|connecting"):
            await store.ping()
        with pytest.raises(StoreUnavailable):  # admit.lua, on the fast path
            await attempt(store, policy_for(api_key("unreachable")))
    finally:
        await store.close()


async def test_a_store_that_answers_with_an_error_refused(clocked_store: QuotaStore) -> None:
    await clocked_store.redis.set(keyspace.POLICY_INDEX, "not a set")

    with pytest.raises(StoreRefused, match="WRONGTYPE"):
        await clocked_store.policy_hashes()
