"""Reading streams on the way through: usage found, usage chunk hidden, text counted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmquota.pricing.tokenizer import exact_counter, output_token_counter
from llmquota.sandbox.fake_upstream.replies import (
    chat_completion_chunks,
    encode_sse,
    plan_reply,
    response_events,
    text_completion_chunks,
)
from llmquota.sandbox.fake_upstream.settings import FakeUpstreamSettings
from llmquota.sidecar.streaming import StreamMeter
from llmquota.sidecar.wire import Usage

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
SETTINGS = FakeUpstreamSettings(completion_tokens=12, prompt_tokens=9, chunks=3)


def chat_stream(*, include_usage: bool) -> bytes:
    reply = plan_reply(SETTINGS, "chat/completions", BODY, include_usage=include_usage)
    return b"".join(encode_sse(chat_completion_chunks(reply)))


def events(raw: bytes) -> list[Any]:
    found = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: ") and event != b"data: [DONE]":
            found.append(json.loads(event[6:]))
    return found


def feed_in_pieces(meter: StreamMeter, raw: bytes, size: int) -> bytes:
    out = b"".join(meter.feed(raw[start : start + size]) for start in range(0, len(raw), size))
    return out + meter.flush()


@pytest.mark.parametrize("piece_size", [1, 7, 100, 100_000])
def test_usage_chunk_is_hidden_when_the_sidecar_asked_for_it(piece_size: int) -> None:
    raw = chat_stream(include_usage=True)
    meter = StreamMeter(hide_usage_chunk=True)
    forwarded = feed_in_pieces(meter, raw, piece_size)
    assert meter.usage == Usage(9, 12)
    assert all(event["choices"] for event in events(forwarded))
    assert forwarded.endswith(b"data: [DONE]\n\n")
    assert len(events(forwarded)) == len(events(raw)) - 1


def test_usage_chunk_is_kept_when_the_client_asked_for_it() -> None:
    raw = chat_stream(include_usage=True)
    meter = StreamMeter(hide_usage_chunk=False)
    assert feed_in_pieces(meter, raw, 13) == raw
    assert meter.usage == Usage(9, 12)


def test_text_is_counted_for_streams_cut_before_usage() -> None:
    raw = chat_stream(include_usage=False)
    meter = StreamMeter(hide_usage_chunk=True)
    feed_in_pieces(meter, raw[: len(raw) // 2], 50)
    assert meter.usage is None
    assert meter.text_chars > 0
    # Without the model's tokenizer, UTF-8 bytes: never fewer than the tokens generated.
    assert meter.completion_tokens_streamed == meter.text_chars


def test_chinese_text_is_counted_in_the_models_tokens_not_by_characters() -> None:
    text = "人工智能的发展历史" * 10
    chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
    meter = StreamMeter(hide_usage_chunk=True, tokens=output_token_counter("gpt-4o-mini"))
    meter.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    assert meter.completion_tokens_streamed == exact_counter("o200k_base").count(text)
    assert meter.completion_tokens_streamed > len(text) / 4


def test_crlf_events_are_read() -> None:
    raw = chat_stream(include_usage=True).replace(b"\n", b"\r\n")
    meter = StreamMeter(hide_usage_chunk=True)
    feed_in_pieces(meter, raw, 5)
    assert meter.usage == Usage(9, 12)


def test_completions_stream_usage() -> None:
    reply = plan_reply(SETTINGS, "completions", {"model": "m", "prompt": "x"}, include_usage=True)
    meter = StreamMeter(hide_usage_chunk=True)
    forwarded = meter.feed(b"".join(encode_sse(text_completion_chunks(reply))))
    assert meter.usage == Usage(9, 12)
    assert all(event["choices"] for event in events(forwarded))


def test_responses_stream_usage_from_the_completed_event_which_is_never_hidden() -> None:
    reply = plan_reply(SETTINGS, "responses", {"model": "m", "input": "x"}, include_usage=True)
    raw = b"".join(encode_sse(response_events(reply)))
    meter = StreamMeter(hide_usage_chunk=True)
    assert meter.feed(raw) == raw
    assert meter.usage == Usage(9, 12)
    assert meter.text_chars == len(reply.text)


def test_malformed_events_pass_through_untouched() -> None:
    meter = StreamMeter(hide_usage_chunk=True)
    raw = b"data: {broken\n\n: comment\n\ndata: [1]\n\n"
    assert meter.feed(raw) == raw
    assert meter.flush() == b""
    assert meter.feed(b"data: {}") == b""
    assert meter.flush() == b"data: {}"


def _chunk(*choices: object) -> bytes:
    return b"data: " + json.dumps({"choices": list(choices)}).encode() + b"\n\n"


def test_every_generated_text_of_a_chunk_counts_and_nothing_else_does() -> None:
    tool = {"function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    raw = b"".join(
        [
            _chunk({"index": 0, "delta": {"content": "Hi", "refusal": "no"}}),
            _chunk({"index": 0, "delta": {"tool_calls": [tool, "junk", {"function": 7}]}}),
            _chunk({"index": 0, "text": "legacy"}, 3, None, {"delta": {"content": 12}}),
            _chunk({"index": 0, "delta": {"content": "", "refusal": None, "tool_calls": {}}}),
            b'data: {"type": "response.output_text.delta", "delta": "resp"}\n\n',
            b'data: {"type": "response.output_text.delta", "delta": ["x"]}\n\n',
        ]
    )
    texts = ["Hi", "no", '{"city": "Oslo"}', "get_weather", "legacy", "resp"]
    meter = StreamMeter(hide_usage_chunk=True)
    assert feed_in_pieces(meter, raw, 9) == raw
    assert meter.text_chars == sum(len(text) for text in texts)
    assert meter.completion_tokens_streamed == sum(len(text.encode()) for text in texts)
