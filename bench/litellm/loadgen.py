"""The comparison's load generator: asyncio + aiohttp, loopback only, bounded in count and time.

Three measurements, each the same for every system it is pointed at:

- `closed_loop`: C clients, each sending its next request when the previous one has been
  read to the end (a stream to its last byte), for a fixed time or request count;
  latency percentiles and requests per second.
- `spend_until_refused`: C clients spread over several proxy processes spend against
  one budget, each until its first refusal; how many requests were served.
- `reset_delays`: exhaust a budget whose windows have known boundaries, then poll
  across the next boundary; how long after it the first request was admitted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

__all__ = [
    "LoadResult",
    "ResetTrial",
    "SpendResult",
    "closed_loop",
    "open_session",
    "percentile",
    "reset_delays",
    "spend_until_refused",
]

# Bounds that hold whatever a run is asked for: no phase runs away.
MAX_PHASE_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 30.0


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.5: median, 0.99: p99)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    """What one closed-loop run saw: latencies of served requests, every status."""

    concurrency: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def served(self) -> int:
        return len(self.latencies_s)

    @property
    def rps(self) -> float:
        return self.served / self.seconds if self.seconds > 0 else 0.0

    def p(self, fraction: float) -> float:
        return percentile(sorted(self.latencies_s), fraction)


@dataclass
class SpendResult:
    """What clients spending against one budget saw: served requests, refusals by status."""

    clients: int
    served: int = 0
    seconds: float = 0.0
    refusals: Counter[str] = field(default_factory=Counter)
    unfinished_clients: int = 0


@dataclass
class ResetTrial:
    """One crossing of a window boundary by a poller whose budget was used up."""

    boundary_s: float
    exhausted: bool
    # When the answer to the first admitted request arrived, minus the boundary: the
    # reset had happened by then. Negative: admitted before the boundary, too early.
    delay_s: float | None
    # When the last refused request was sent, minus the boundary: the reset happened
    # after it. So the reset lies in (last_refused_s, delay_s].
    last_refused_s: float | None
    polls: int


def open_session(connections: int) -> aiohttp.ClientSession:
    """One keep-alive pool for a run, wide enough that no client waits for a socket."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def _send(
    session: aiohttp.ClientSession, url: str, key: str, body: bytes
) -> tuple[int, dict[str, str]]:
    """One request, read to its last byte; the status ("error" as -1) and headers."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as response:
        async for _chunk in response.content.iter_any():
            pass
        return response.status, dict(response.headers)


async def closed_loop(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    key: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    max_requests: int,
    warmup_seconds: float = 0.0,
) -> LoadResult:
    """`concurrency` clients, client i on urls[i % len(urls)], for `seconds` after a warm-up."""
    if warmup_seconds > 0:
        await closed_loop(
            session, urls, key, body,
            concurrency=concurrency, seconds=warmup_seconds, max_requests=max_requests,
        )  # fmt: skip
    seconds = min(seconds, MAX_PHASE_SECONDS)
    result = LoadResult(concurrency=concurrency, seconds=seconds)
    started = time.perf_counter()
    deadline = started + seconds
    budget = [max_requests]

    async def client(index: int) -> None:
        url = urls[index % len(urls)]
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            sent = time.perf_counter()
            try:
                status, _headers = await _send(session, url, key, body)
            except (aiohttp.ClientError, TimeoutError) as error:
                result.statuses[type(error).__name__] += 1
                continue
            result.statuses[str(status)] += 1
            if status == 200:
                result.latencies_s.append(time.perf_counter() - sent)

    await asyncio.gather(*(client(index) for index in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def spend_until_refused(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    key: str,
    body: bytes,
    *,
    clients: int,
    seconds: float,
) -> SpendResult:
    """`clients` clients over `urls`, each sending until its first refusal or the deadline."""
    seconds = min(seconds, MAX_PHASE_SECONDS)
    result = SpendResult(clients=clients)
    started = time.perf_counter()
    deadline = started + seconds

    async def client(index: int) -> None:
        url = urls[index % len(urls)]
        while time.perf_counter() < deadline:
            try:
                status, _headers = await _send(session, url, key, body)
            except (aiohttp.ClientError, TimeoutError) as error:
                result.refusals[type(error).__name__] += 1
                return
            if status != 200:
                result.refusals[str(status)] += 1
                return
            result.served += 1
        result.unfinished_clients += 1

    await asyncio.gather(*(client(index) for index in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


async def _sleep_until(wall_time_s: float) -> None:
    await asyncio.sleep(max(0.0, wall_time_s - time.time()))


async def reset_delays(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    body: bytes,
    *,
    anchor_s: float,
    window_s: float,
    trials: int,
    poll_interval_s: float,
) -> list[ResetTrial]:
    """Cross `trials` boundaries (anchor + k * window) of a budget one request uses up.

    First, just after a boundary, spend the budget (one admitted request, then a refusal
    shows it is used up). Then per trial: from shortly before the next boundary, poll
    every `poll_interval_s` until a request is admitted; that request spends the new
    window's budget, and one more request checks that it did, for the next trial.
    Wall-clock time, as the proxies' windows are (Redis TIME, or the proxy's own clock,
    on this same machine).
    """
    found: list[ResetTrial] = []
    now = time.time()
    boundary = anchor_s + (int((now - anchor_s) // window_s) + 1) * window_s
    await _sleep_until(boundary + min(0.1, window_s / 10))
    first, _ = await _send(session, url, key, body)
    second, _ = await _send(session, url, key, body)
    exhausted = first == 200 and second != 200
    for _ in range(trials):
        boundary += window_s
        await _sleep_until(boundary - min(0.2, window_s / 5))
        delay: float | None = None
        last_refused: float | None = None
        polls = 0
        give_up = boundary + min(window_s / 2, 5.0)
        while time.time() < give_up:
            sent = time.time()
            status, _ = await _send(session, url, key, body)
            polls += 1
            if status == 200:
                delay = time.time() - boundary
                break
            last_refused = sent - boundary
            await asyncio.sleep(poll_interval_s)
        found.append(ResetTrial(boundary, exhausted, delay, last_refused, polls))
        status, _ = await _send(session, url, key, body)
        exhausted = delay is not None and status != 200
    return found
