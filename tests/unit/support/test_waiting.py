"""The one wait helper: the value it waited for, or a failure that says what and how far."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from tests.support.waiting import WaitTimeoutError, wait_until, wait_until_sync


def test_the_sync_wait_returns_the_first_truthy_value() -> None:
    answers: Iterator[dict[str, str] | list[str] | None] = iter([None, [], {"phase": "Ready"}])
    assert wait_until_sync(lambda: next(answers), timeout_s=5, poll_s=0) == {"phase": "Ready"}


async def test_the_async_wait_returns_the_first_truthy_value() -> None:
    counter = itertools.count()

    async def third_call() -> int:
        return max(next(counter) - 1, 0)

    assert await wait_until(third_call, timeout_s=5, poll_s=0) == 1


def test_a_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    with pytest.raises(WaitTimeoutError, match=r"the Secret: not within 0.1s \(last seen: \[\]\)"):
        wait_until_sync(list, timeout_s=0.1, poll_s=0.01, what="the Secret")


async def test_an_async_timeout_is_an_assertion_naming_the_last_value() -> None:
    async def spend() -> float:
        return 0.0

    with pytest.raises(AssertionError, match=r"spend in status: .*last seen: 0.0"):
        await wait_until(spend, timeout_s=0.1, poll_s=0.01, what="spend in status")


def test_a_probe_that_raises_ends_the_wait_at_once() -> None:
    def dead() -> bool:
        raise RuntimeError("redis-server exited with code 1")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until_sync(dead, timeout_s=60)
