"""The official `openai` client against the fake: every endpoint parses, usage is exact."""

from __future__ import annotations

import base64
import struct
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]


async def test_chat_completion(openai_client: AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 16)
    assert completion.usage.total_tokens == 26


async def test_smaller_max_tokens_caps_the_completion(openai_client: AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
    )
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].finish_reason == "length"


async def test_stream_with_include_usage_ends_with_a_usage_chunk(
    openai_client: AsyncOpenAI,
) -> None:
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("Hello")
    assert [chunk.usage is None for chunk in chunks] == [True] * (len(chunks) - 1) + [False]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (10, 16)
    # role chunk, 4 content chunks, finish chunk, usage chunk
    assert len(chunks) == 7


async def test_stream_without_include_usage_has_no_usage(openai_client: AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_legacy_completions(openai_client: AsyncOpenAI) -> None:
    completion = await openai_client.completions.create(model="gpt-4o-mini", prompt="Hi")
    assert completion.choices[0].text
    assert completion.usage is not None
    assert completion.usage.total_tokens == 26
    stream = await openai_client.completions.create(
        model="gpt-4o-mini", prompt="Hi", stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16


async def test_embeddings_as_floats(openai_client: AsyncOpenAI) -> None:
    result = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=["one", "two", "three"], encoding_format="float"
    )
    assert [item.index for item in result.data] == [0, 1, 2]
    assert len(result.data[0].embedding) == 16
    assert sum(value * value for value in result.data[0].embedding) == pytest.approx(1, rel=1e-5)
    assert result.usage.prompt_tokens == 10


async def test_embeddings_as_base64_when_asked(openai_client: AsyncOpenAI) -> None:
    result = await openai_client.embeddings.create(
        model="text-embedding-3-small", input="one", encoding_format="base64"
    )
    encoded: Any = result.data[0].embedding  # the client leaves an explicit base64 as is
    vector = struct.unpack("<16f", base64.b64decode(encoded))
    assert sum(value * value for value in vector) == pytest.approx(1, rel=1e-5)


async def test_embeddings_default_encoding_is_base64_and_decodes(
    openai_client: AsyncOpenAI,
) -> None:
    # The client asks for base64 when not told otherwise, and decodes it itself.
    result = await openai_client.embeddings.create(
        model="text-embedding-3-small", input="hello", dimensions=32
    )
    assert len(result.data) == 1
    assert len(result.data[0].embedding) == 32


async def test_responses(openai_client: AsyncOpenAI) -> None:
    response = await openai_client.responses.create(model="gpt-4o-mini", input="Say hello")
    assert response.status == "completed"
    assert response.output_text.startswith("Hello")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 16)
    assert response.usage.total_tokens == 26


async def test_responses_stream(openai_client: AsyncOpenAI) -> None:
    stream = await openai_client.responses.create(
        model="gpt-4o-mini", input="Say hello", stream=True
    )
    events = [event async for event in stream]
    names = [event.type for event in events]
    assert names[0] == "response.created"
    assert names.count("response.output_text.delta") == 4
    assert names[-1] == "response.completed"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == 16
    assert [event.sequence_number for event in events] == list(range(len(events)))


async def test_models(openai_client: AsyncOpenAI) -> None:
    models = [model.id async for model in openai_client.models.list()]
    assert "gpt-4o-mini" in models


async def test_status_fault_raises_the_matching_openai_error(
    openai_client: AsyncOpenAI,
) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        await openai_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-fake-fault": "status:429"},
        )
    assert raised.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        await openai_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-fake-fault": "status:500"},
        )


async def test_reset_mid_stream_breaks_the_client(openai_client: AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-fake-fault": "reset-mid-stream"},
    )
    received = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError):
        await consume()
    assert 0 < len(received) < 6


async def test_no_usage_fault(openai_client: AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-fake-fault": "no-usage"}
    )
    assert completion.usage is None
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-fault": "no-usage"},
    )
    assert all(chunk.usage is None for chunk in [chunk async for chunk in stream])


async def test_require_key(start_fake: Any) -> None:
    fake = await start_fake(require_key="sk-upstream")
    base_url = str(fake.make_url("/v1"))
    async with AsyncOpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
    async with AsyncOpenAI(base_url=base_url, api_key="sk-upstream", max_retries=0) as right:
        assert [model.id async for model in right.models.list()]
