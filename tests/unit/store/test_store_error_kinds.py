"""Which of the store's errors redis-py's become: a Redis Cluster that is failing over
or resharding is away for a while (StoreUnavailable: retry, 503 or fail open), not an
answer that a retry would get again (StoreRefused)."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from llmquota.store import StoreRefused, StoreUnavailable
from llmquota.store.errors import store_error


@pytest.mark.parametrize(
    "error",
    [
        RedisConnectionError("Error 111 connecting"),
        ConnectionResetError("reset by peer"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        MasterDownError("MASTERDOWN Link with MASTER is down"),
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        SlotNotCoveredError("Slot 42 is not covered by the cluster"),
    ],
)
def test_a_store_that_is_away_is_unavailable(
    error: RedisError | RedisClusterException | OSError,
) -> None:
    assert isinstance(store_error(error), StoreUnavailable)


def test_an_error_answer_is_refused() -> None:
    assert isinstance(store_error(ResponseError("cost must be an integer")), StoreRefused)
