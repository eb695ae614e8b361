"""What crosses the wire: keys, bodies, headers in both directions, usage shapes."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from llmquota.sidecar.wire import (
    BodyTooLargeError,
    InvalidBodyError,
    Usage,
    UsageTail,
    client_response_headers,
    decode_body,
    error_body,
    narrow_model_list,
    parse_body,
    presented_key,
    redact,
    redact_bytes,
    stream_asks_usage,
    upstream_request_headers,
    usage_in_body,
    usage_of,
    with_stream_usage,
    with_stream_usage_raw,
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


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "h\\u00e9"}]}',
        b'{"model":"m","stream":true}\n  ',
        b'{"model": "m", "stream": true, "stream_options": {"other": 1}}',
        b'{"model": "m", "stream": true, "stream_options": null}',
        '{"model": "m", "stream": true}'.encode("utf-16-be"),
    ],
)
def test_the_usage_option_is_added_to_the_body_as_sent(raw: bytes) -> None:
    parsed = parse_body(raw)
    sent = with_stream_usage_raw(parsed)
    assert json.loads(sent) == with_stream_usage(parsed.body)
    if b"stream_options" not in raw and raw.startswith(b"{"):
        # Not re-encoded: the client's bytes go on, the option added at the end.
        assert sent.startswith(raw.rstrip()[:-1])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # orjson would read these otherwise (a float) or refuse them; the standard
        # library's reading stands.
        (
            b'{"model": "m", "max_tokens": 123456789012345678901234567890}',
            10**29 + 23456789012345678901234567890,
        ),
        (b'{"model": "m", "max_tokens": 18446744073709551616}', 2**64),
        (b'{"model": "m", "max_tokens": NaN}', None),
        (b'{"model": "m", "max_tokens": 16}', 16),
    ],
)
def test_the_body_means_what_the_standard_library_reads(raw: bytes, expected: object) -> None:
    max_tokens = parse_body(raw).body["max_tokens"]
    if expected is None:
        assert max_tokens != max_tokens  # NaN
    else:
        assert max_tokens == expected
        assert isinstance(max_tokens, int)


# Integers around the 64 bits orjson reads exactly (15 to 30 digits), besides runs of
# digits broken by other characters: a body means what the standard library reads,
# whichever parser read it.
_numbers = (
    st.integers(min_value=15, max_value=30).flatmap(
        lambda digits: st.integers(min_value=10 ** (digits - 1), max_value=10**digits - 1)
    )
    | st.integers()
)
_json_values = st.recursive(
    _numbers | st.text(alphabet="0123456789 x", max_size=40) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["max_tokens", "n", "seed", "x"]), _json_values))
@example({"max_tokens": 10**20 - 1})  # past 64 bits: never a float
@example({"seed": -(2**63) - 1})  # 19 digits, past 64 bits
@example({"n": [10**18, 2**64 - 1, -(2**63)]})  # within 64 bits: orjson's reading stands
def test_every_body_means_what_the_standard_library_reads(fields: dict[str, object]) -> None:
    raw = json.dumps({"model": "m", **fields}, separators=(",", ":")).encode()
    assert parse_body(raw).body == json.loads(raw)


def test_a_header_name_is_forwarded_by_the_forward_header_list_in_force() -> None:
    client = [("X-Team-Trace", "1"), ("x-team-trace", "2"), ("Content-Type", "text/plain")]
    assert upstream_request_headers(client, None) == {"Content-Type": "text/plain"}
    allowed = upstream_request_headers(client, None, frozenset({"x-team-trace"}))
    assert allowed == {"X-Team-Trace": "1", "x-team-trace": "2", "Content-Type": "text/plain"}
    assert upstream_request_headers(client, None) == {"Content-Type": "text/plain"}


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
            ("X-Stainless-Lang", "python"),
            ("x-fake-fault", "status:500"),
            ("x-custom", "1"),
            ("OpenAI-Organization", "org-someone-else"),
            ("OpenAI-Project", "proj-someone-else"),
            ("Forwarded", "for=10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Cookie", "session=1"),
        ],
        "sk-upstream",
        frozenset({"x-fake-fault"}),
    )
    assert headers == {
        "Authorization": "Bearer sk-upstream",
        "Content-Type": "application/json",
        "OpenAI-Beta": "assistants=v2",
        "X-Stainless-Lang": "python",
        "x-fake-fault": "status:500",
    }
    assert "Authorization" not in upstream_request_headers([("Authorization", "Bearer x")], None)


UPSTREAM_SECRET = "sk-proj-hostileupstream-abcd1234"


@pytest.mark.parametrize(
    "echo",
    [
        UPSTREAM_SECRET,
        "sk-proj-********************1234",
        "sk-...1234",
        "sk-proj-host...1234",
        "****1234",
    ],
)
def test_the_upstream_credential_is_redacted_whole_or_masked(echo: str) -> None:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {echo}."}}).encode()
    assert b"1234" not in redact_bytes(body, UPSTREAM_SECRET)
    headers = client_response_headers([("x-echo", f"Bearer {echo}")], {}, UPSTREAM_SECRET)
    assert headers == {"x-echo": "Bearer [redacted]"}


def test_each_credential_is_redacted_from_headers_after_a_rotation() -> None:
    rotated = "sk-proj-rotatedcredential-wxyz9876"
    upstream = [("x-echo", f"key {UPSTREAM_SECRET}"), ("x-other", f"key {rotated}")]
    assert client_response_headers(upstream, {}, UPSTREAM_SECRET) == {
        "x-echo": "key [redacted]",
        "x-other": f"key {rotated}",
    }
    assert client_response_headers(upstream, {}, rotated) == {
        "x-echo": f"key {UPSTREAM_SECRET}",
        "x-other": "key [redacted]",
    }
    # A credential too short to mask (under 8 characters) is left as it is.
    assert client_response_headers([("x-echo", "abc1234")], {}, "1234") == {"x-echo": "abc1234"}


def test_redaction_leaves_other_text_alone() -> None:
    text = "request 1234 failed; sk-other-key-9999; 1234 tokens"
    assert redact(text, UPSTREAM_SECRET) == text
    assert redact_bytes(b"\xff\xfe 1234", UPSTREAM_SECRET) == b"\xff\xfe 1234"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"object": "list", "data": [{"id": "a"}, {"id": "b"}, 7]}', [{"id": "a"}]),
        (b"not json", None),
        (b'{"data": {"id": "a"}}', None),
        (b"[]", None),
    ],
)
def test_a_model_list_is_narrowed_or_refused(raw: bytes, expected: object) -> None:
    narrowed = narrow_model_list(raw, ["a"])
    assert (None if narrowed is None else json.loads(narrowed)["data"]) == expected


def test_usage_is_found_at_the_end_of_an_answer_too_large_to_hold() -> None:
    answer = json.dumps(
        {
            "choices": [{"message": {"content": '"usage": {"prompt_tokens": 1}' * 5000}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 22},
        }
    ).encode()
    tail = UsageTail()
    for start in range(0, len(answer), 1000):
        tail.feed(answer[start : start + 1000])
    assert tail.usage() == Usage(11, 22)
    assert usage_in_body(answer) == Usage(11, 22)


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


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "GZIP "])
def test_a_compressed_body_is_decoded(encoding: str) -> None:
    data = b'{"model": "m"}'
    packed = zlib.compress(data) if encoding == "deflate" else _gzip(data)
    assert decode_body(packed, encoding, 100) == data


def test_a_body_that_inflates_past_the_limit_is_refused_without_inflating_it() -> None:
    bomb = _gzip(b"\0" * 10_000_000)
    with pytest.raises(BodyTooLargeError):
        decode_body(bomb, "gzip", 1000)


@pytest.mark.parametrize(
    ("raw", "encoding", "status"),
    [
        (b"not gzip", "gzip", 400),
        (_gzip(b"{}")[:-9], "gzip", 400),
        (b"{}", "br", 415),
        (b"{}", "gzip, deflate", 415),
    ],
)
def test_a_body_that_does_not_decode_is_refused(raw: bytes, encoding: str, status: int) -> None:
    with pytest.raises(InvalidBodyError) as refused:
        decode_body(raw, encoding, 1000)
    assert refused.value.status == status
