"""LiteLLM custom-auth hook: the bench's virtual key, as `/key/generate` would store it.

LiteLLM keeps virtual keys in PostgreSQL through Prisma, whose engines cannot be
fetched on this machine (docs/litellm-comparison.md). Its enforcement on the request
path -- the key budget check with its reservation, the spend counters, the rpm limiter --
does not need the database, only the key's definition does. This hook, loaded by
LiteLLM's proxy (`general_settings.custom_auth`, with `custom_auth_run_common_checks`
so that the budget checks run), returns that definition; `compare.py` sets it through
the environment of each LiteLLM process:

- `LLMQUOTA_BENCH_KEY`: the one key accepted;
- `LLMQUOTA_BENCH_MAX_BUDGET`: USD, the key's `max_budget`;
- `LLMQUOTA_BENCH_RPM`: the key's `rpm_limit`.

It runs inside LiteLLM's venv, not the project's: its imports are LiteLLM's.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import HTTPException, Request  # type: ignore[import-not-found,unused-ignore]
from litellm.proxy._types import UserAPIKeyAuth  # type: ignore[import-not-found,unused-ignore]

__all__ = ["user_api_key_auth"]

BENCH_KEY = os.environ["LLMQUOTA_BENCH_KEY"]
MAX_BUDGET = float(os.environ["LLMQUOTA_BENCH_MAX_BUDGET"])
RPM_LIMIT = int(os.environ["LLMQUOTA_BENCH_RPM"])


async def user_api_key_auth(request: Request, api_key: str) -> Any:
    """Accept only the bench key; give it the budget and rpm limit under test."""
    del request  # the key alone decides
    if api_key != BENCH_KEY:
        raise HTTPException(status_code=401, detail="invalid api key")
    # `api_key` is hashed into `token` by UserAPIKeyAuth, which keys the spend counter
    # and the rate limiter, as for a key from the database. Spend starts at 0 on every
    # call: the authoritative spend is the counter, which the budget check reads.
    return UserAPIKeyAuth(api_key=api_key, max_budget=MAX_BUDGET, rpm_limit=RPM_LIMIT)
