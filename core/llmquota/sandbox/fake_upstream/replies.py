"""The fake upstream's answers, as OpenAI sends them: pure functions from request to JSON.

Shapes follow OpenAI's API reference closely enough that the official `openai` client
parses them, including the stream details a proxy must get right: the final
`choices: []` chunk with usage only under `stream_options.include_usage`, `[DONE]` for
chat and completions, named events and no `[DONE]` for Responses.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llmquota.pricing.estimate import requested_max_completion_tokens
from llmquota.sandbox.fake_upstream.prompt_tokens import prompt_tokens as prompt_tokens_of
from llmquota.sandbox.fake_upstream.settings import FakeUpstreamSettings

__all__ = [
    "Reply",
    "chat_completion",
    "chat_completion_chunks",
    "embeddings",
    "encode_sse",
    "error_envelope",
    "model_list",
    "plan_reply",
    "response_events",
    "response_object",
    "stream_usage_requested",
    "text_completion",
    "text_completion_chunks",
]

JsonObject = dict[str, Any]
# One server-sent event: its `event:` name (None for chat/completions) and its data.
Event = tuple[str | None, JsonObject | str]

_WORDS = ("Hello", " from", " the", " llmquota", " fake", " upstream", ". ")
_MAX_EMBEDDING_DIMENSIONS = 4096


@dataclass(frozen=True, slots=True)
class Reply:
    """What the fake answers one request with, whatever the wire format."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    pieces: tuple[str, ...]
    include_usage: bool
    created: int
    reply_id: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def plan_reply(
    settings: FakeUpstreamSettings,
    endpoint: str,
    body: Mapping[str, Any],
    *,
    include_usage: bool,
) -> Reply:
    """Token counts and text for `body`: deterministic, so tests know exact costs.

    Prompt tokens are `settings.prompt_tokens` or counted as OpenAI bills them;
    completion tokens are `settings.completion_tokens`, or the request's cap if smaller.
    """
    cap = requested_max_completion_tokens(endpoint, body)
    completion_tokens = (
        settings.completion_tokens if cap is None else min(cap, settings.completion_tokens)
    )
    prompt_tokens = (
        prompt_tokens_of(endpoint, body)
        if settings.prompt_tokens is None
        else settings.prompt_tokens
    )
    model = body.get("model")
    return Reply(
        model=model if isinstance(model, str) else "",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason="length" if cap is not None and cap < settings.completion_tokens else "stop",
        pieces=_pieces(completion_tokens, settings.chunks),
        include_usage=include_usage,
        created=int(time.time()),
        reply_id=uuid.uuid4().hex[:24],
    )


def stream_usage_requested(body: Mapping[str, Any]) -> bool:
    """True when a chat/completions stream asks for the final usage chunk."""
    stream_options = body.get("stream_options")
    return isinstance(stream_options, Mapping) and stream_options.get("include_usage") is True


@lru_cache(maxsize=256)
def _pieces(tokens: int, chunks: int) -> tuple[str, ...]:
    """`tokens` words split as evenly as possible over `chunks` pieces (some may be empty)."""
    words = [_WORDS[index % len(_WORDS)] for index in range(tokens)]
    count = max(chunks, 1)
    size, extra = divmod(tokens, count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append("".join(words[start:end]))
        start = end
    return tuple(pieces)


def _chat_usage(reply: Reply) -> JsonObject:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(reply: Reply) -> JsonObject:
    """A non-streaming `chat.completion`."""
    completion: JsonObject = {
        "id": f"chatcmpl-{reply.reply_id}",
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": "fp_llmquota_fake",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
    }
    if reply.include_usage:
        completion["usage"] = _chat_usage(reply)
    return completion


def chat_completion_chunks(reply: Reply) -> list[Event]:
    """A chat stream: role, content pieces, finish, the usage chunk if asked, `[DONE]`."""
    deltas: list[tuple[JsonObject, str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None),
        *(({"content": piece}, None) for piece in reply.pieces),
        ({}, reply.finish_reason),
    ]
    chunks: list[Event] = []
    for delta, finish_reason in deltas:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunks.append((None, _chat_chunk(reply, [choice])))
    if reply.include_usage:
        chunks.append((None, _chat_chunk(reply, [], _chat_usage(reply))))
    chunks.append((None, "[DONE]"))
    return chunks


def _chat_chunk(
    reply: Reply, choices: list[JsonObject], usage: JsonObject | None = None
) -> JsonObject:
    chunk: JsonObject = {
        "id": f"chatcmpl-{reply.reply_id}",
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": "fp_llmquota_fake",
        "choices": choices,
    }
    if reply.include_usage:
        # OpenAI sends `"usage": null` on every chunk but the last when usage was asked for.
        chunk["usage"] = usage
    return chunk


def text_completion(reply: Reply) -> JsonObject:
    """A non-streaming legacy `text_completion`."""
    completion = _text_chunk(reply, reply.text, reply.finish_reason)
    if reply.include_usage:
        completion["usage"] = _text_usage(reply)
    return completion


def text_completion_chunks(reply: Reply) -> list[Event]:
    """A legacy completions stream, with the usage chunk under `include_usage`."""
    chunks: list[Event] = [(None, _text_chunk(reply, piece, None)) for piece in reply.pieces]
    chunks.append((None, _text_chunk(reply, "", reply.finish_reason)))
    if reply.include_usage:
        usage_chunk = _text_chunk(reply, "", None)
        usage_chunk["choices"] = []
        usage_chunk["usage"] = _text_usage(reply)
        chunks.append((None, usage_chunk))
    chunks.append((None, "[DONE]"))
    return chunks


def _text_chunk(reply: Reply, text: str, finish_reason: str | None) -> JsonObject:
    return {
        "id": f"cmpl-{reply.reply_id}",
        "object": "text_completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }


def _text_usage(reply: Reply) -> JsonObject:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def response_object(reply: Reply, *, status: str = "completed") -> JsonObject:
    """A Responses API `response`; in progress ones have no output and no usage yet."""
    done = status == "completed"
    return {
        "id": f"resp_{reply.reply_id}",
        "object": "response",
        "created_at": reply.created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": reply.model,
        "output": [_output_message(reply, done=True)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _response_usage(reply) if done and reply.include_usage else None,
        "user": None,
        "metadata": {},
    }


def _output_message(reply: Reply, *, done: bool) -> JsonObject:
    return {
        "id": f"msg_{reply.reply_id}",
        "type": "message",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": [_output_text(reply.text)] if done else [],
    }


def _output_text(text: str) -> JsonObject:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _response_usage(reply: Reply) -> JsonObject:
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def response_events(reply: Reply) -> list[Event]:
    """A Responses stream with OpenAI's event names, ending in `response.completed`."""
    item_id = f"msg_{reply.reply_id}"
    position = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, JsonObject]] = [
        ("response.created", {"response": response_object(reply, status="in_progress")}),
        ("response.in_progress", {"response": response_object(reply, status="in_progress")}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": _output_message(reply, done=False)},
        ),
        ("response.content_part.added", {**position, "part": _output_text("")}),
        *(
            ("response.output_text.delta", {**position, "delta": piece, "logprobs": []})
            for piece in reply.pieces
        ),
        ("response.output_text.done", {**position, "text": reply.text, "logprobs": []}),
        ("response.content_part.done", {**position, "part": _output_text(reply.text)}),
        (
            "response.output_item.done",
            {"output_index": 0, "item": _output_message(reply, done=True)},
        ),
        ("response.completed", {"response": response_object(reply)}),
    ]
    return [
        (name, {"type": name, "sequence_number": number, **data})
        for number, (name, data) in enumerate(events)
    ]


def embeddings(
    settings: FakeUpstreamSettings, body: Mapping[str, Any], prompt_tokens: int, *, usage: bool
) -> JsonObject:
    """An embeddings list: one vector per input, floats or base64 as the request asks."""
    dimensions = body.get("dimensions")
    if not (isinstance(dimensions, int) and 0 < dimensions <= _MAX_EMBEDDING_DIMENSIONS):
        dimensions = settings.embedding_dimensions
    as_floats, as_base64 = _vector(dimensions)
    vector: list[float] | str = as_base64 if body.get("encoding_format") == "base64" else as_floats
    model = body.get("model")
    listing: JsonObject = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector}
            for index in range(_embedding_inputs(body.get("input")))
        ],
        "model": model if isinstance(model, str) else "",
    }
    if usage:
        listing["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return listing


@lru_cache(maxsize=32)
def _vector(dimensions: int) -> tuple[list[float], str]:
    """A fixed unit vector, as float32 values and as OpenAI's base64 of little-endian float32."""
    raw = [math.cos(index) for index in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(value / norm for value in raw))
    as_floats = list(struct.unpack(f"<{dimensions}f", packed))
    return as_floats, base64.b64encode(packed).decode("ascii")


def _embedding_inputs(embedding_input: Any) -> int:
    """How many vectors to return: one per string or token list in a batch."""
    if isinstance(embedding_input, list) and any(
        isinstance(item, str | list) for item in embedding_input
    ):
        return len(embedding_input)
    return 1


def model_list(models: Sequence[str]) -> JsonObject:
    """`GET /v1/models`."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 1700000000, "owned_by": "llmquota-fake"}
            for model in models
        ],
    }


def error_envelope(status: int, message: str, code: str | None = None) -> JsonObject:
    """OpenAI's error body, with the `type` OpenAI uses for this status."""
    if status == 429:
        error_type = "requests"
    elif status >= 500:
        error_type = "server_error"
    else:
        error_type = "invalid_request_error"
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def encode_sse(events: Sequence[Event], *, malformed_json: bool = False) -> list[bytes]:
    """Server-sent event frames; `malformed_json` breaks the data of the first JSON event."""
    frames = []
    broken = not malformed_json
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        if not broken and not isinstance(data, str):
            text, broken = text[: len(text) // 2], True
        prefix = f"event: {name}\n" if name else ""
        frames.append(f"{prefix}data: {text}\n\n".encode())
    return frames
