"""Load through a sidecar while its Redis fails over, and what it saw: each request's
start, end, outcome and cost (the
upstream's usage at the sidecar's prices), so a test can say when service stopped and resumed,
how many requests were refused meanwhile and how much served spend was never counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import openai

from llmquota.policy.limits import nanos
from llmquota.pricing import load_price_table

__all__ = ["Failover", "Load", "Outcome"]

MAX_REQUESTS_PER_WORKER = 20_000
MAX_RUN_S = 120.0
MODEL = "gpt-4o-mini"
PRICES = load_price_table(None)
"""The sidecar's own prices (no overrides): what it charges for the usage it was sent."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it started and ended (monotonic s), its status, what it cost."""

    started: float
    ended: float
    status: int
    cost_nanos: int = 0


@dataclass
class Load:
    """Workers that each send one request after another with the official client."""

    clients: list[openai.OpenAI]
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """One thread per client, each until `stop` (or its bounds)."""
        for client in self.clients:
            thread = threading.Thread(target=self._work, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self, client: openai.OpenAI) -> None:
        deadline = time.monotonic() + MAX_RUN_S
        for _ in range(MAX_REQUESTS_PER_WORKER):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            outcome = self._one(client)
            with self._lock:
                self.outcomes.append(outcome)

    @staticmethod
    def _one(client: openai.OpenAI) -> Outcome:
        started = time.monotonic()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}]
            )
        except openai.APIStatusError as error:
            return Outcome(started, time.monotonic(), error.status_code)
        except openai.APIConnectionError:
            return Outcome(started, time.monotonic(), 0)
        ended = time.monotonic()
        usage = raw.parse().usage
        assert usage is not None
        details = usage.prompt_tokens_details
        cost = PRICES.cost(
            MODEL,
            usage.prompt_tokens,
            usage.completion_tokens,
            (details.cached_tokens or 0) if details is not None else 0,
        )
        return Outcome(started, ended, raw.http_response.status_code, nanos(cost))

    def served(self) -> list[Outcome]:
        """The requests that were answered (and so should be charged)."""
        with self._lock:
            return [outcome for outcome in self.outcomes if outcome.status == 200]


@dataclass(frozen=True, slots=True)
class Failover:
    """What one failover cost, from the outcomes around the kill at `killed` (monotonic)."""

    promoted_after_s: float
    serving_after_s: float
    requests: int
    refused: int
    refused_statuses: dict[int, int]
    served_nanos: int
    counted_nanos: int

    @classmethod
    def measure(
        cls, load: Load, killed: float, promoted_after_s: float, counted_nanos: int
    ) -> Failover:
        """The figures of one run: `counted_nanos` is what the store holds at the end."""
        after = [outcome for outcome in load.outcomes if outcome.started >= killed]
        refused = [outcome for outcome in load.outcomes if outcome.status != 200]
        first_served = min(o.ended for o in after if o.status == 200)
        statuses: dict[int, int] = {}
        for outcome in refused:
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
        return cls(
            promoted_after_s=promoted_after_s,
            serving_after_s=first_served - killed,
            requests=len(load.outcomes),
            refused=len(refused),
            refused_statuses=statuses,
            served_nanos=sum(outcome.cost_nanos for outcome in load.served()),
            counted_nanos=counted_nanos,
        )

    @property
    def lost_nanos(self) -> int:
        """Spend served but not counted."""
        return self.served_nanos - self.counted_nanos

    def __str__(self) -> str:
        return (
            f"primary SIGKILLed: promoted after {self.promoted_after_s:.2f} s, serving again "
            f"after {self.serving_after_s:.2f} s; {self.refused} of {self.requests} requests "
            f"refused {self.refused_statuses}; spend served {self.served_nanos / 1e9:.9f} USD, "
            f"counted {self.counted_nanos / 1e9:.9f}, lost {self.lost_nanos / 1e9:.9f}"
        )
