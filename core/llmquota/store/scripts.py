"""The Lua scripts, read from package data once and registered with a Redis client.

Each operation is one file in `lua/`; `_common.lua` (windows, release, sweep) is
prepended to each, since Redis scripts cannot share functions otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

__all__ = ["Scripts", "script_source"]


@cache
def script_source(name: str) -> str:
    """The full source of one operation: the shared prelude, then the operation."""
    lua = files("llmquota.store") / "lua"
    return f"{(lua / '_common.lua').read_text()}\n{(lua / f'{name}.lua').read_text()}"


NAMES = ("admit", "settle", "abort", "renew", "sweep", "seed", "restore")
"""Every operation, one file each in `lua/`."""


@dataclass(frozen=True)
class Scripts:
    """The registered scripts; redis-py runs them by SHA and reloads after a restart."""

    admit: AsyncScript
    settle: AsyncScript
    abort: AsyncScript
    renew: AsyncScript
    sweep: AsyncScript
    seed: AsyncScript
    restore: AsyncScript

    def all(self) -> list[AsyncScript]:
        """Every registered script."""
        return [getattr(self, name) for name in NAMES]

    @classmethod
    def register(cls, redis: Redis | RedisCluster) -> Scripts:
        """Register every operation with `redis`."""
        return cls(**{name: redis.register_script(script_source(name)) for name in NAMES})
