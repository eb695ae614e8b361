"""One handler per OpenAI endpoint: decide the reply (`replies`), send it (`transmit`).

Handlers receive an `Exchange` whose body is already parsed and checked and whose
faults are already resolved by the app's admission step, so each stays a few lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmquota.sandbox.fake_upstream import replies
from llmquota.sandbox.fake_upstream.faults import FaultPlan
from llmquota.sandbox.fake_upstream.prompt_tokens import prompt_tokens as prompt_tokens_of
from llmquota.sandbox.fake_upstream.settings import FakeUpstreamSettings
from llmquota.sandbox.fake_upstream.transmit import send_events, send_json

__all__ = [
    "Exchange",
    "chat_completions",
    "completions",
    "embeddings",
    "list_models",
    "responses",
]


@dataclass(frozen=True, slots=True)
class Exchange:
    """An admitted request: its JSON body (empty for GET) and the faults it gets."""

    settings: FakeUpstreamSettings
    body: Mapping[str, Any]
    faults: FaultPlan

    @property
    def streaming(self) -> bool:
        return self.body.get("stream") is True

    async def send_stream(
        self, request: web.Request, events: list[replies.Event]
    ) -> web.StreamResponse:
        frames = replies.encode_sse(events, malformed_json=self.faults.malformed_json)
        delay_seconds = self.settings.chunk_delay_ms / 1000
        return await send_events(request, frames, self.faults, delay_seconds)


async def chat_completions(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    """`POST /v1/chat/completions`, streaming or not."""
    reply = _reply(exchange, "chat/completions")
    if exchange.streaming:
        return await exchange.send_stream(request, replies.chat_completion_chunks(reply))
    return await send_json(request, replies.chat_completion(reply), exchange.faults)


async def completions(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    """`POST /v1/completions`, the legacy text completions, streaming or not."""
    reply = _reply(exchange, "completions")
    if exchange.streaming:
        return await exchange.send_stream(request, replies.text_completion_chunks(reply))
    return await send_json(request, replies.text_completion(reply), exchange.faults)


async def responses(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    """`POST /v1/responses`; its streams always end with usage, as OpenAI's do."""
    reply = replies.plan_reply(
        exchange.settings,
        "responses",
        exchange.body,
        include_usage=not exchange.faults.no_usage,
    )
    if exchange.streaming:
        return await exchange.send_stream(request, replies.response_events(reply))
    return await send_json(request, replies.response_object(reply), exchange.faults)


async def embeddings(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    """`POST /v1/embeddings`, float vectors or `encoding_format: base64`."""
    settings = exchange.settings
    prompt_tokens = (
        prompt_tokens_of("embeddings", exchange.body)
        if settings.prompt_tokens is None
        else settings.prompt_tokens
    )
    listing = replies.embeddings(
        settings, exchange.body, prompt_tokens, usage=not exchange.faults.no_usage
    )
    return await send_json(request, listing, exchange.faults)


async def list_models(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    """`GET /v1/models`: the models from the settings."""
    return await send_json(request, replies.model_list(exchange.settings.models), exchange.faults)


def _reply(exchange: Exchange, endpoint: str) -> replies.Reply:
    """Chat and completions: usage when not streaming, or when the stream asks for it."""
    wants_usage = not exchange.streaming or replies.stream_usage_requested(exchange.body)
    return replies.plan_reply(
        exchange.settings,
        endpoint,
        exchange.body,
        include_usage=wants_usage and not exchange.faults.no_usage,
    )
