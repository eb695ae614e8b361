"""What crosses the wire: keys, bodies, headers in both directions, usage shapes."""

from __future__ import annotations

import json

import pytest

from llmquota.sidecar.wire import (
    InvalidBodyError,
    Usage,
    client_response_headers,
    error_body,
    parse_body,
    presented_key,
    stream_asks_usage,
    upstream_request_headers,
    usage_of,
    with_stream_usage,
)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer sk-a"}, "sk-a"),
        ({"authorization": "bearer  sk-a "}, "sk-a"),
        ({"api-key": "sk-b"}, "sk-b"),
        ({"x-api-key": "sk-c"}, "sk-c"),
        ({"authorization": "Basic xyz", "x-api-key": "sk-c"}, "sk-c"),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_presented_key(headers: dict[str, str], expected: str | None) -> None:
    assert presented_key(headers) == expected


def test_parse_body_reads_model_stream_and_user() -> None:
    parsed = parse_body(b'{"model": "gpt-4o", "stream": true, "user": "alice"}')
    assert (parsed.model, parsed.stream, parsed.end_user) == ("gpt-4o", True, "alice")
    assert parse_body(b'{"model": "m", "user": 3}').end_user is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": []}', "model parameter"),
        (b'{"model": ""}', "model parameter"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_parse_body_refuses_what_it_cannot_act_on(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidBodyError, match=message):
        parse_body(raw)


def test_stream_usage_is_added_keeping_other_stream_options() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"other": 1}}
    assert not stream_asks_usage(body)
    changed = with_stream_usage(body)
    assert changed["stream_options"] == {"other": 1, "include_usage": True}
    assert stream_asks_usage(changed)
    assert body["stream_options"] == {"other": 1}


def test_client_credentials_never_go_upstream() -> None:
    headers = upstream_request_headers(
        [
            ("Authorization", "Bearer sk-client"),
            ("api-key", "sk-client"),
            ("X-Api-Key", "sk-client"),
            ("Content-Type", "application/json"),
            ("Content-Length", "12"),
            ("Host", "localhost:4000"),
            ("OpenAI-Beta", "assistants=v2"),
            ("x-fake-fault", "status:500"),
        ],
        "sk-upstream",
    )
    assert headers == {
        "Authorization": "Bearer sk-upstream",
        "Content-Type": "application/json",
        "OpenAI-Beta": "assistants=v2",
        "x-fake-fault": "status:500",
    }
    assert "Authorization" not in upstream_request_headers([("Authorization", "Bearer x")], None)


def test_response_headers_carry_own_limits_instead_of_the_upstreams() -> None:
    headers = client_response_headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", "99"),
            ("Content-Encoding", "gzip"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("openai-processing-ms", "12"),
        ],
        {"x-ratelimit-remaining-requests": "4", "x-llmquota-budget-remaining": "1.000000000"},
    )
    assert headers == {
        "Content-Type": "application/json",
        "openai-processing-ms": "12",
        "x-ratelimit-remaining-requests": "4",
        "x-llmquota-budget-remaining": "1.000000000",
    }


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 5}, Usage(10, 5)),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
            Usage(10, 5, 4),
        ),
        ({"prompt_tokens": 7, "total_tokens": 7}, Usage(7, 0)),
        (
            {"input_tokens": 3, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}},
            Usage(3, 2, 1),
        ),
        # Malformed counts are no usage (charged from the estimate), never a free request.
        ({"prompt_tokens": -5, "completion_tokens": True}, None),
        ({"prompt_tokens": 5, "completion_tokens": 1e308}, None),
        (None, None),
        ({"total_tokens": 3}, None),
    ],
)
def test_usage_of_both_shapes(usage: object, expected: Usage | None) -> None:
    assert usage_of(usage) == expected


def test_error_body_is_openais_envelope() -> None:
    assert json.loads(error_body("no", "invalid_request_error", None, "model")) == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "model", "code": None}
    }
