"""An upstream that misbehaves in ways the fake upstream does not: answers of hundreds
of megabytes, an event with no end, errors that echo the credential. It runs in a thread
of the test process, on 127.0.0.1, and records the headers of every request.

The behaviour is chosen by the request's `x-hostile` header (the sidecars under test
forward it with `--forward-header x-hostile`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web
from tests.reliability.harness import free_port

__all__ = ["CREDENTIAL", "HostileUpstream", "hostile_upstream"]

CREDENTIAL = "sk-proj-hostileupstream-abcd1234"
CHUNK = b"x" * 65536
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


@dataclass
class HostileUpstream:
    """Where it listens and the headers each request brought."""

    url: str
    seen_headers: list[dict[str, str]] = field(default_factory=list)


async def _completions(request: web.Request) -> web.StreamResponse:
    upstream: HostileUpstream = request.app[_STATE]
    upstream.seen_headers.append(dict(request.headers))
    await request.read()
    behaviour, _, size = request.headers.get("x-hostile", "").partition(":")
    if behaviour == "huge-whole":
        return await _huge_whole(request, int(size))
    if behaviour == "endless-event":
        return await _endless_event(request, int(size))
    if behaviour == "echo-credential":
        sent = request.headers.get("Authorization", "")
        masked = f"{CREDENTIAL[:3]}...{CREDENTIAL[-4:]}"
        message = (
            f"Incorrect API key provided: {sent} ({masked}, {CREDENTIAL[:8]}****{CREDENTIAL[-4:]})"
        )
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
        return web.json_response(
            {"error": error},
            status=401,
            headers={"x-echo-authorization": sent, "www-authenticate": f"Bearer realm={masked}"},
        )  # fmt: skip
    return web.json_response(
        {
            "id": "c",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "usage": USAGE,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
        }
    )


async def _huge_whole(request: web.Request, megabytes: int) -> web.StreamResponse:
    """A chat completion whose content is `megabytes` MiB, usage at the end."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(
        b'{"id": "c", "object": "chat.completion", "model": "gpt-4o-mini", '
        b'"choices": [{"index": 0, "finish_reason": "stop", '
        b'"message": {"role": "assistant", "content": "'
    )
    for _ in range(megabytes * 16):
        await response.write(CHUNK)
    await response.write(b'"}}], "usage": ' + json.dumps(USAGE).encode() + b"}")
    await response.write_eof()
    return response


async def _endless_event(request: web.Request, megabytes: int) -> web.StreamResponse:
    """A stream whose first event never ends: `megabytes` MiB without a blank line."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'data: {"choices": [{"index": 0, "delta": {"content": "')
    for _ in range(megabytes * 16):
        await response.write(CHUNK)
    await response.write_eof()
    return response


_STATE = web.AppKey("state", HostileUpstream)


@contextmanager
def hostile_upstream() -> Iterator[HostileUpstream]:
    """The hostile upstream, serving in a thread until the block ends."""
    port = free_port()
    upstream = HostileUpstream(f"http://127.0.0.1:{port}")
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_STATE] = upstream
    app.router.add_post("/v1/chat/completions", _completions)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "hostile upstream did not start"
    try:
        yield upstream
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
