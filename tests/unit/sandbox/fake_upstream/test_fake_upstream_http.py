"""The fake upstream over raw HTTP: faults, recording, routes, auth, pacing."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from llmquota.sandbox.fake_upstream import parse_faults

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
async def test_with_and_without_the_v1_prefix(fake: TestClient[Any, Any], path: str) -> None:
    response = await fake.post(path, json=CHAT)
    assert response.status == 200
    assert (await response.json())["object"] == "chat.completion"
    models = await fake.get(path.replace("chat/completions", "models"))
    assert (await models.json())["object"] == "list"


async def test_prompt_tokens_are_counted_as_openai_bills_them(start_fake: Any) -> None:
    fake = await start_fake()
    response = await fake.post("/v1/chat/completions", json=CHAT)
    # "hi": 1 token, 3 per message, 3 to prime the reply
    assert (await response.json())["usage"]["prompt_tokens"] == 7
    chinese = {**CHAT, "messages": [{"role": "user", "content": "人工智能的发展历史"}]}
    response = await fake.post("/v1/chat/completions", json=chinese)
    # 9 characters, 4 tokens in o200k_base (the 4-characters rule would say 3)
    assert (await response.json())["usage"]["prompt_tokens"] == 4 + 3 + 3


async def test_requests_are_recorded_and_cleared(fake: TestClient[Any, Any]) -> None:
    await fake.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-upstream"}
    )
    recorded = (await (await fake.get("/_fake/requests")).json())["requests"]
    assert len(recorded) == 1
    headers = recorded[0].pop("headers")
    assert recorded[0] == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "query": {},
        "json": CHAT,
    }
    assert headers["authorization"] == "Bearer sk-upstream"
    assert (await fake.delete("/_fake/requests")).status == 204
    assert (await (await fake.get("/_fake/requests")).json())["requests"] == []


async def test_recording_keeps_only_the_most_recent(start_fake: Any) -> None:
    fake = await start_fake(recorded_requests=3)
    for index in range(5):
        await fake.post("/v1/embeddings", json={"model": "m", "input": str(index)})
    recorded = (await (await fake.get("/_fake/requests")).json())["requests"]
    assert [entry["json"]["input"] for entry in recorded] == ["2", "3", "4"]


async def test_require_key_refuses_other_credentials(start_fake: Any) -> None:
    fake = await start_fake(require_key="sk-upstream")
    refused = await fake.post("/v1/chat/completions", json=CHAT)
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "invalid_api_key"
    admitted = await fake.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-upstream"}
    )
    assert admitted.status == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b"[1, 2]", 400), (b'{"messages": []}', 400), (b"", 400)],
)
async def test_bodies_openai_would_refuse(
    fake: TestClient[Any, Any], body: bytes, status: int
) -> None:
    response = await fake.post("/v1/chat/completions", data=body)
    assert response.status == status
    assert (await response.json())["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_status_fault_uses_openais_envelope(fake: TestClient[Any, Any], status: int) -> None:
    response = await fake.post(
        "/v1/chat/completions", json=CHAT, headers={"x-fake-fault": f"status:{status}"}
    )
    assert response.status == status
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}


async def test_bad_fault_header_is_a_400_that_says_why(fake: TestClient[Any, Any]) -> None:
    response = await fake.post(
        "/v1/chat/completions", json=CHAT, headers={"x-fake-fault": "explode"}
    )
    assert response.status == 400
    assert "explode" in (await response.json())["error"]["message"]


async def test_malformed_json_fault(fake: TestClient[Any, Any]) -> None:
    response = await fake.post(
        "/v1/chat/completions", json=CHAT, headers={"x-fake-fault": "malformed-json"}
    )
    assert response.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(await response.text())


async def test_malformed_json_fault_in_a_stream(fake: TestClient[Any, Any]) -> None:
    response = await fake.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"x-fake-fault": "malformed-json"},
    )
    data = [line[6:] for line in (await response.text()).splitlines() if line.startswith("data:")]
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[0])
    assert data[-1] == "[DONE]"


async def test_reset_mid_response_cuts_a_non_streaming_body(fake: TestClient[Any, Any]) -> None:
    response = await fake.post(
        "/v1/chat/completions", json=CHAT, headers={"x-fake-fault": "reset-mid-stream"}
    )
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_reset_mid_stream_sends_half_the_events(fake: TestClient[Any, Any]) -> None:
    response = await fake.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"x-fake-fault": "reset-mid-stream"},
    )
    received = bytearray()

    async def consume() -> None:
        async for data in response.content.iter_any():
            received.extend(data)

    with pytest.raises(aiohttp.ClientPayloadError):
        await consume()
    # 7 events without usage: role, 4 content, finish, [DONE]; half is 3.
    assert received.count(b"data: ") == 3


async def test_no_usage_fault_everywhere(fake: TestClient[Any, Any]) -> None:
    headers = {"x-fake-fault": "no-usage"}
    chat = await (await fake.post("/v1/chat/completions", json=CHAT, headers=headers)).json()
    assert "usage" not in chat
    embed = {"model": "m", "input": "x"}
    assert "usage" not in await (await fake.post("/embeddings", json=embed, headers=headers)).json()
    responses = {"model": "m", "input": "x", "stream": True}
    stream = await (await fake.post("/v1/responses", json=responses, headers=headers)).text()
    completed = stream.rsplit("data: ", 1)[1]
    assert json.loads(completed)["response"]["usage"] is None


async def test_server_wide_fault_and_the_none_opt_out(start_fake: Any) -> None:
    fake = await start_fake(fault=parse_faults("status:503"))
    assert (await fake.post("/v1/chat/completions", json=CHAT)).status == 503
    healthy = await fake.post("/v1/chat/completions", json=CHAT, headers={"x-fake-fault": "none"})
    assert healthy.status == 200


async def test_delay_fault_and_latency_delay_the_first_byte(start_fake: Any) -> None:
    fake = await start_fake(latency_ms=50)
    started = time.monotonic()
    await fake.post("/v1/chat/completions", json=CHAT, headers={"x-fake-fault": "delay:0.1"})
    assert time.monotonic() - started >= 0.15


async def test_chunk_delay_paces_the_stream(start_fake: Any) -> None:
    fake = await start_fake(chunk_delay_ms=20, chunks=4)
    started = time.monotonic()
    response = await fake.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await response.read()
    # 7 events, 6 pauses between them
    assert time.monotonic() - started >= 0.12


async def test_chunks_setting_and_completion_text(start_fake: Any) -> None:
    fake = await start_fake(chunks=2, completion_tokens=3)
    response = await fake.post(
        "/v1/completions", json={"model": "m", "prompt": "x", "stream": True}
    )
    events = [line[6:] for line in (await response.text()).splitlines() if line.startswith("data:")]
    texts = [json.loads(event)["choices"][0]["text"] for event in events[:-1]]
    assert texts == ["Hello from", " the", ""]
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
