"""The store: all of llmquota's Redis I/O, its Lua scripts and the embedded redis-server."""

from llmquota.store.connection import RedisUrlError, check_redis, parse_redis_url
from llmquota.store.embedded import EmbeddedRedis, find_redis_server
from llmquota.store.errors import StoreError, StoreRefused, StoreUnavailable
from llmquota.store.quota_store import BudgetCounter, QuotaStore
from llmquota.store.replication import ReplicaWait

__all__ = [
    "BudgetCounter",
    "EmbeddedRedis",
    "QuotaStore",
    "RedisUrlError",
    "ReplicaWait",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "check_redis",
    "find_redis_server",
    "parse_redis_url",
]
