"""Token estimates before sending: bounds that real prompts never pass, no crash on any body."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmquota.pricing.estimate import (
    MAX_COMPLETION_TOKENS_CAP,
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_IMAGE,
    TOKENS_PER_MESSAGE,
    TokenEstimate,
    estimate_request,
    requested_max_completion_tokens,
)
from llmquota.pricing.tokenizer import TOKENIZED_CHARS_PER_REQUEST
from llmquota.sandbox.fake_upstream.prompt_tokens import prompt_tokens

CHAT = "/v1/chat/completions"
CONTEXT = 1000
# 420 characters: Chinese, emoji, mixed scripts. Each is several tokens per 4 characters.
REAL_PROMPTS = [
    "我们今天讨论一下人工智能的发展历史以及未来的趋势。" * 17 + "人工智能的发展",
    "🚀🔥👍🏽 " * 84,
    "Привет, 世界! ¿Qué tal? नमस्ते 😀 " * 14,
]


def chat(content: str, model: str = "gpt-4o-mini", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **fields}


def test_chat_counts_the_models_tokens_plus_overheads() -> None:
    expected_prompt = 1 + TOKENS_PER_MESSAGE + REPLY_PRIMING_TOKENS  # "hello" is one token
    assert estimate_request(CHAT, chat("hello", max_tokens=7)) == TokenEstimate(expected_prompt, 7)


def test_a_model_of_unknown_encoding_counts_utf8_bytes() -> None:
    expected_prompt = len("héllo".encode()) + TOKENS_PER_MESSAGE + REPLY_PRIMING_TOKENS
    assert estimate_request(CHAT, chat("héllo", "my-llama")).prompt_tokens == expected_prompt


@pytest.mark.parametrize("text", REAL_PROMPTS)
@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4", "claude-3-5-sonnet", "my-llama"])
def test_real_prompts_are_never_under_counted(text: str, model: str) -> None:
    """The upstream bills o200k tokens (fake_upstream counts them as OpenAI does)."""
    body = chat(text, model)
    estimated = estimate_request(CHAT, body).prompt_tokens
    assert estimated >= prompt_tokens(CHAT, body)
    assert estimated > len(text) / 4  # what the old rule of thumb said


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), model=st.sampled_from(["gpt-4o", "o3-mini", "llama3"]))
def test_no_text_is_under_counted(text: str, model: str) -> None:
    body = chat(text, model)
    assert estimate_request(CHAT, body).prompt_tokens >= prompt_tokens(CHAT, body)


def test_past_the_cpu_budget_bytes_bound_the_rest() -> None:
    tokenized = "a b " * (TOKENIZED_CHARS_PER_REQUEST // 4)
    bounded = "c d " * 100
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": tokenized}, bounded]}
    estimate = estimate_request(CHAT, body)
    exact = estimate_request(CHAT, chat(tokenized, "gpt-4o")).prompt_tokens
    assert estimate.prompt_tokens == exact + len(bounded) + TOKENS_PER_MESSAGE


def test_max_completion_tokens_wins_over_max_tokens_and_n_multiplies() -> None:
    body = {"messages": [], "max_completion_tokens": 10, "max_tokens": 99, "n": 3}
    assert estimate_request("chat/completions", body).max_completion_tokens == 30


def test_without_a_cap_the_output_is_what_the_context_window_leaves() -> None:
    estimate = estimate_request(CHAT, chat("hello"), context_window=CONTEXT)
    assert estimate.max_completion_tokens == CONTEXT - 1
    assert estimate.capped_by_model


def test_an_absurd_cap_and_n_reserve_the_models_limit_per_choice() -> None:
    body = chat("hello", max_tokens=10**7, n=128)
    estimate = estimate_request(CHAT, body, context_window=CONTEXT)
    assert estimate == TokenEstimate(8, 128 * (CONTEXT - 1), capped_by_model=True)
    assert not estimate_request(
        CHAT, chat("hi", max_tokens=10), context_window=CONTEXT
    ).capped_by_model


def test_a_completions_batch_reserves_each_prompt_and_choice() -> None:
    body = {"model": "gpt-4o", "prompt": ["hello", "hello world"], "n": 3, "max_tokens": 10**7}
    estimate = estimate_request("/v1/completions", body, context_window=CONTEXT)
    assert estimate == TokenEstimate(1 + 2, 3 * (CONTEXT - 1) + 3 * (CONTEXT - 2), True)


def test_multi_part_content_counts_text_and_images_not_image_bytes() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "12345678"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + "A" * 9999},
                    },
                ],
            }
        ]
    }
    expected = 8 + TOKENS_PER_IMAGE + TOKENS_PER_MESSAGE + REPLY_PRIMING_TOKENS
    assert estimate_request(CHAT, body).prompt_tokens == expected


def test_tools_and_tool_calls_count() -> None:
    without = {"messages": [{"role": "assistant", "content": None}]}
    with_tools = {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
            }
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    assert (
        estimate_request(CHAT, with_tools).prompt_tokens
        > estimate_request(CHAT, without).prompt_tokens
    )


@pytest.mark.parametrize(
    ("prompt", "tokens", "prompts"),
    [
        ("abcdefgh", 8, 1),
        (["abcd", "abcdefgh"], 12, 2),
        ([1, 2, 3], 3, 1),
        ([[1, 2], [3]], 3, 2),
    ],
)
def test_completions_prompt_shapes(prompt: Any, tokens: int, prompts: int) -> None:
    estimate = estimate_request("/v1/completions", {"prompt": prompt, "max_tokens": 5})
    assert estimate == TokenEstimate(tokens, 5 * prompts)


@pytest.mark.parametrize(
    ("embedding_input", "tokens"),
    [("abcdefgh", 8), (["abcd", "abcde"], 9), ([5, 6, 7, 8], 4), ([[1], [2, 3]], 3)],
)
def test_embeddings_have_no_completion(embedding_input: Any, tokens: int) -> None:
    assert estimate_request("/embeddings", {"input": embedding_input}) == TokenEstimate(tokens, 0)


def test_responses_string_and_items() -> None:
    as_string = estimate_request("/v1/responses", {"input": "abcdefgh", "max_output_tokens": 9})
    assert as_string == TokenEstimate(8 + TOKENS_PER_MESSAGE, 9)
    items = {
        "instructions": "abcd",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "abcd"}]},
            {"type": "function_call_output", "call_id": "c", "output": "abcdefgh"},
        ],
    }
    assert estimate_request("/v1/responses", items, context_window=CONTEXT) == TokenEstimate(
        4 + (4 + TOKENS_PER_MESSAGE) + (8 + TOKENS_PER_MESSAGE), CONTEXT, capped_by_model=True
    )


@pytest.mark.parametrize("cap", [-1, True, 1.5, "10", None])
def test_odd_caps_are_ignored(cap: Any) -> None:
    assert requested_max_completion_tokens(CHAT, {"max_tokens": cap}) is None


def test_huge_caps_are_clamped() -> None:
    assert requested_max_completion_tokens(CHAT, {"max_tokens": 10**40}) == (
        MAX_COMPLETION_TOKENS_CAP
    )


def test_unknown_endpoint_and_non_object_bodies_are_zero() -> None:
    assert estimate_request("/v1/audio/speech", {"input": "hello"}) == TokenEstimate(0, 0)
    assert estimate_request(CHAT, [1, 2]) == TokenEstimate(0, 0)


request_fields = st.sampled_from(
    [
        "messages", "content", "prompt", "input", "instructions", "tools", "tool_calls",
        "name", "arguments", "output", "max_tokens", "max_completion_tokens",
        "max_output_tokens", "n", "best_of", "type", "text", "image_url",
    ]
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(request_fields | st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
bodies = st.dictionaries(request_fields | st.text(max_size=5), json_values, max_size=6)
endpoints = st.sampled_from(
    ["/v1/chat/completions", "/completions", "/v1/embeddings", "responses", "/x", ""]
)


@settings(max_examples=300, deadline=None)
@given(endpoint=endpoints, body=bodies | json_values)
def test_estimate_never_raises_and_is_never_negative(endpoint: str, body: Any) -> None:
    estimate = estimate_request(endpoint, body)
    assert estimate.prompt_tokens >= 0
    assert estimate.max_completion_tokens >= 0
    assert isinstance(estimate.prompt_tokens, int)
