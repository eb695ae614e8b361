"""LiteLLM custom-auth hook: the bench's virtual keys, as `/key/generate` would store them.

LiteLLM keeps virtual keys in PostgreSQL through Prisma, whose engines cannot be
fetched on this machine (docs/litellm-comparison.md). Its enforcement on the request
path -- the key budget check with its reservation, the spend counters, the rpm limiter --
does not need the database; only the keys' definitions do. This hook, loaded by
LiteLLM's proxy (`general_settings.custom_auth`, with `custom_auth_run_common_checks`
so that the budget checks run), returns those definitions. `compare.py` writes them to
a JSON file named by `LLMQUOTA_BENCH_KEYS`: `{"sk-...": {"max_budget": USD,
"rpm_limit": N}, ...}`.

It runs inside LiteLLM's venv, not the project's: its imports are LiteLLM's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request  # type: ignore[import-not-found,unused-ignore]
from litellm.proxy._types import UserAPIKeyAuth  # type: ignore[import-not-found,unused-ignore]

__all__ = ["user_api_key_auth"]

KEY_LIMITS: dict[str, dict[str, float]] = json.loads(
    Path(os.environ["LLMQUOTA_BENCH_KEYS"]).read_text()
)


async def user_api_key_auth(request: Request, api_key: str) -> Any:
    """Accept only the bench's keys; give each its budget and rpm limit."""
    del request  # the key alone decides
    limits = KEY_LIMITS.get(api_key)
    if limits is None:
        raise HTTPException(status_code=401, detail="invalid api key")
    # UserAPIKeyAuth hashes `api_key` into `token`, which names the key's spend counter
    # and rate-limit counters, as for a key from the database. `spend` stays 0 here:
    # the budget check reads the spend counter, which is authoritative without a DB.
    return UserAPIKeyAuth(
        api_key=api_key,
        max_budget=limits["max_budget"],
        rpm_limit=int(limits["rpm_limit"]),
    )
