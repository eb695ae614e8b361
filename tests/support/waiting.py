"""Waiting on a condition with a deadline, the one way tests wait (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["wait_until"]


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, poll_s: float = 0.05
) -> float:
    """Poll `condition` until it holds; the seconds it took. Fails after `timeout_s`."""
    started = time.monotonic()
    while not await condition():
        elapsed = time.monotonic() - started
        assert elapsed < timeout_s, f"condition not met within {timeout_s}s"
        await asyncio.sleep(poll_s)
    return time.monotonic() - started
