"""How the fake upstream behaves: listen address, token counts, pacing, default faults."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmquota.sandbox.fake_upstream.faults import FaultPlan

__all__ = ["DEFAULT_MODELS", "FakeUpstreamSettings"]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


@dataclass(frozen=True, slots=True)
class FakeUpstreamSettings:
    """Everything `llmquota fake-upstream` can be told; defaults answer fast and healthy.

    Token counts are fixed or derived deterministically from the request, so a test can
    compute the exact cost the sidecar should charge.
    """

    host: str = "127.0.0.1"
    port: int = 9000
    # Time to first byte of every reply, and the pause between a stream's events.
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    # Every reply generates this many tokens, or the request's cap when that is smaller.
    completion_tokens: int = 16
    # None: prompt tokens are counted from the request (fake_upstream.prompt_tokens).
    prompt_tokens: int | None = None
    # Content events in a stream; the reply's tokens are spread over them.
    chunks: int = 4
    embedding_dimensions: int = 16
    # When set, requests without `Authorization: Bearer <require_key>` get a 401.
    require_key: str | None = None
    # Faults for requests that send no `x-fake-fault` header.
    fault: FaultPlan = field(default_factory=FaultPlan)
    models: tuple[str, ...] = DEFAULT_MODELS
    recorded_requests: int = 1000
