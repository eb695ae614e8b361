"""Fixtures that serve the fake upstream on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openai import AsyncOpenAI

from llmquota.sandbox.fake_upstream import FakeUpstreamSettings, create_app

StartFake = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def start_fake() -> AsyncIterator[StartFake]:
    """Start a fake upstream with the given settings fields; stopped after the test."""
    clients: list[TestClient[Any, Any]] = []

    async def start(**settings: Any) -> TestClient[Any, Any]:
        server = TestServer(create_app(FakeUpstreamSettings(**settings)), host="127.0.0.1")
        client = TestClient(server)
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def fake(start_fake: StartFake) -> TestClient[Any, Any]:
    """A fake upstream with fixed prompt tokens, so usage is known exactly."""
    return await start_fake(prompt_tokens=10, completion_tokens=16, chunks=4)


@pytest.fixture
async def openai_client(fake: TestClient[Any, Any]) -> AsyncIterator[AsyncOpenAI]:
    """The official client pointed at `fake`, without retries so faults show directly."""
    client = AsyncOpenAI(base_url=str(fake.make_url("/v1")), api_key="sk-test", max_retries=0)
    yield client
    await client.close()
