"""Fault specs, reply planning and the command line, without a server."""

from __future__ import annotations

import argparse

import pytest

from llmquota.sandbox.fake_upstream import FakeUpstreamSettings, FaultPlan, parse_faults
from llmquota.sandbox.fake_upstream.command import add_arguments, settings_from_args
from llmquota.sandbox.fake_upstream.faults import FaultSpecError
from llmquota.sandbox.fake_upstream.replies import encode_sse, plan_reply


def test_fault_specs() -> None:
    assert parse_faults("") == FaultPlan()
    assert parse_faults("none") == FaultPlan()
    assert parse_faults("status:429") == FaultPlan(status=429)
    assert parse_faults("delay:0.5, reset-mid-stream") == FaultPlan(
        delay_seconds=0.5, reset_mid_stream=True
    )
    assert parse_faults("malformed-json,no-usage") == FaultPlan(malformed_json=True, no_usage=True)


@pytest.mark.parametrize("spec", ["status:200", "status:abc", "delay:-1", "delay:nan", "boom"])
def test_bad_fault_specs(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_faults(spec)


def test_reply_is_deterministic_and_capped_by_the_request() -> None:
    settings = FakeUpstreamSettings(completion_tokens=16, prompt_tokens=None, chunks=4)
    body = {"model": "m", "messages": [{"role": "user", "content": "abcd"}], "max_tokens": 3}
    reply = plan_reply(settings, "chat/completions", body, include_usage=True)
    assert (reply.prompt_tokens, reply.completion_tokens) == (1 + 3 + 3, 3)
    assert reply.finish_reason == "length"
    assert len(reply.pieces) == 4
    assert reply.text == "Hello from the"


def test_encode_sse_frames() -> None:
    frames = encode_sse([("response.created", {"a": 1}), (None, "[DONE]")])
    assert frames == [b'event: response.created\ndata: {"a":1}\n\n', b"data: [DONE]\n\n"]


def test_command_line_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--listen", "0.0.0.0:9100", "--latency-ms", "5", "--chunk-delay-ms", "1",
            "--completion-tokens", "7", "--chunks", "2", "--require-key", "sk-x",
            "--fault", "status:500", "--models", "a, b",
        ]
    )  # fmt: skip
    settings = settings_from_args(args)
    assert (settings.host, settings.port) == ("0.0.0.0", 9100)
    assert (settings.latency_ms, settings.chunk_delay_ms) == (5, 1)
    assert (settings.completion_tokens, settings.chunks) == (7, 2)
    assert settings.require_key == "sk-x"
    assert settings.fault == FaultPlan(status=500)
    assert settings.models == ("a", "b")


@pytest.mark.parametrize("argv", [["--fault", "boom"], ["--chunks", "0"], ["--latency-ms", "-1"]])
def test_bad_flags_are_refused(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
