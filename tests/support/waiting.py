"""Waiting on a condition with a deadline, the one way tests and benchmarks wait.

Never a bare sleep: a probe is called until it returns something truthy, which is
returned; past the timeout a `WaitTimeoutError` names what was awaited and the last value the
probe returned, so a failure says how far things got. A probe that raises stops the
wait with its error (a probe that finds the process it waits on dead should say so at
once, not at the deadline). `wait_until` awaits an async probe, `wait_until_sync` calls
a plain one; both run the same bookkeeping (`_Patience`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["WaitTimeoutError", "wait_until", "wait_until_sync"]

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A probe did not hold within its timeout; the message names it and its last value."""


class _Patience:
    """One wait's deadline and its failure message, shared by the sync and async loops."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s

    def give_up_on(self, last: object) -> None:
        """Raise `WaitTimeoutError` if the deadline passed; `last` is what the probe returned."""
        if time.monotonic() >= self.deadline:
            msg = f"{self.what}: not within {self.timeout_s:g}s (last seen: {last!r})"
            raise WaitTimeoutError(msg)


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    poll_s: float = 0.05,
    *,
    what: str = "condition",
) -> T:
    """Await `probe` every `poll_s` until it returns something truthy; that value."""
    patience = _Patience(what, timeout_s)
    while True:
        if last := await probe():
            return last
        patience.give_up_on(last)
        await asyncio.sleep(poll_s)


def wait_until_sync(
    probe: Callable[[], T | None],
    timeout_s: float,
    poll_s: float = 0.05,
    *,
    what: str = "condition",
) -> T:
    """Call `probe` every `poll_s` until it returns something truthy; that value.

    For synchronous tests, fixtures and benchmarks; inside a running event loop use
    `wait_until`, since this blocks the loop while it sleeps.
    """
    patience = _Patience(what, timeout_s)
    while True:
        if last := probe():
            return last
        patience.give_up_on(last)
        time.sleep(poll_s)
