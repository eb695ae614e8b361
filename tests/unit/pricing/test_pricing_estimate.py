"""Token estimates before sending: the documented heuristic, and no crash on any body."""

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

CHAT = "/v1/chat/completions"


def test_chat_counts_four_chars_a_token_rounded_up_plus_overheads() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 7}
    expected_prompt = 2 + TOKENS_PER_MESSAGE + REPLY_PRIMING_TOKENS
    assert estimate_request(CHAT, body) == TokenEstimate(expected_prompt, 7)


def test_max_completion_tokens_wins_over_max_tokens_and_n_multiplies() -> None:
    body = {"messages": [], "max_completion_tokens": 10, "max_tokens": 99, "n": 3}
    assert estimate_request("chat/completions", body).max_completion_tokens == 30


def test_default_cap_when_the_request_sets_none() -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    assert estimate_request(CHAT, body).max_completion_tokens == 256
    assert (
        estimate_request(CHAT, body, default_max_completion_tokens=50).max_completion_tokens == 50
    )


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
    expected = 2 + TOKENS_PER_IMAGE + TOKENS_PER_MESSAGE + REPLY_PRIMING_TOKENS
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
        ("abcdefgh", 2, 1),
        (["abcd", "abcdefgh"], 3, 2),
        ([1, 2, 3], 3, 1),
        ([[1, 2], [3]], 3, 2),
    ],
)
def test_completions_prompt_shapes(prompt: Any, tokens: int, prompts: int) -> None:
    estimate = estimate_request("/v1/completions", {"prompt": prompt, "max_tokens": 5})
    assert estimate == TokenEstimate(tokens, 5 * prompts)


@pytest.mark.parametrize(
    ("embedding_input", "tokens"),
    [("abcdefgh", 2), (["abcd", "abcde"], 3), ([5, 6, 7, 8], 4), ([[1], [2, 3]], 3)],
)
def test_embeddings_have_no_completion(embedding_input: Any, tokens: int) -> None:
    assert estimate_request("/embeddings", {"input": embedding_input}) == TokenEstimate(tokens, 0)


def test_responses_string_and_items() -> None:
    as_string = estimate_request("/v1/responses", {"input": "abcdefgh", "max_output_tokens": 9})
    assert as_string == TokenEstimate(2 + TOKENS_PER_MESSAGE, 9)
    items = {
        "instructions": "abcd",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "abcd"}]},
            {"type": "function_call_output", "call_id": "c", "output": "abcdefgh"},
        ],
    }
    assert estimate_request("/v1/responses", items) == TokenEstimate(
        1 + (1 + TOKENS_PER_MESSAGE) + (2 + TOKENS_PER_MESSAGE), 256
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
