"""Flag defaults from the environment, the same way for every command.

`--upstream-key-file` reads `LLMQUOTA_UPSTREAM_KEY_FILE`: a Helm chart or a Pod spec sets
variables where a command line is awkward, and the flag given still wins.
"""

from __future__ import annotations

import os

__all__ = ["env", "env_bool", "env_float", "env_int"]

_TRUE = frozenset({"1", "true", "yes", "on"})


def env(flag: str, default: str | None = None) -> str | None:
    """The variable of `flag` (`--fail-open` → `LLMQUOTA_FAIL_OPEN`), or `default`."""
    return os.environ.get("LLMQUOTA_" + flag.upper().replace("-", "_"), default)


def env_int(flag: str, default: int) -> int:
    """A whole-number flag's default: its variable, or `default` when unset or empty."""
    return int(env(flag) or default)


def env_float(flag: str, default: float) -> float:
    """A number flag's default: its variable, or `default` when unset or empty."""
    return float(env(flag) or default)


def env_bool(flag: str) -> bool:
    """A switch's default: True when its variable is 1, true, yes or on (any case)."""
    return (env(flag) or "").lower() in _TRUE
