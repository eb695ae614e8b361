"""The store's own errors: what its callers catch, so that none of them imports redis.

Every `QuotaStore` call that fails raises one of these, chained to redis-py's (or the
socket's) error. Two kinds, because callers answer them differently: a store that cannot
be reached (`StoreUnavailable`: the same call may succeed once it is back, so the sidecar
answers 503 or fails open, and retries a settle) and a store that answered with an error
(`StoreRefused`: a script that refused its arguments, a replica that takes no writes; the
same call will fail again).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "REDIS_ERRORS",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "store_call",
    "store_error",
]

# What a call to Redis raises when it fails: redis-py's errors (its Cluster client's
# own are no RedisError), and a socket's that it lets through.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
# Away for a while: unreachable, too slow, or a Cluster failing over (CLUSTERDOWN,
# MASTERDOWN), resharding (TRYAGAIN) or with no node for a slot or none reachable
# (RedisClusterException). Error replies of the rest are the store's answer.
_UNREACHABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
    OSError,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreError(Exception):
    """A store call failed."""


class StoreUnavailable(StoreError):  # noqa: N818 - named as the 503 it becomes
    """The store could not be reached or did not answer in time (it is down, restarting,
    loading its data, or partitioned away): the same call may succeed later."""


class StoreRefused(StoreError):  # noqa: N818 - the store's answer, not a crash
    """The store answered the call with an error (a script refused its arguments, a
    read-only replica refused a write): nothing was written, and a retry fails again."""


def store_error(error: RedisError | RedisClusterException | OSError) -> StoreError:
    """The store's error for redis-py's (or a socket's) `error`, with its message."""
    if isinstance(error, _UNREACHABLE):
        return StoreUnavailable(str(error))
    if isinstance(error, ResponseError):
        return StoreRefused(str(error))
    return StoreError(str(error))


def store_call(
    method: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """`method`, raising the store's errors instead of redis-py's."""

    @functools.wraps(method)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except REDIS_ERRORS as error:
            raise store_error(error) from error

    return call
