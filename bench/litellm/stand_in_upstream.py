"""A trivial OpenAI-compatible server, used only while `llmquota fake-upstream` is missing.

The comparison's figures come from the project's own fake upstream; this stand-in lets
the LiteLLM side be started and the driver be developed before that exists, and
`compare.py` names which of the two served a run. It answers instantly, with fixed
usage, so every request costs the same.

    python bench/litellm/stand_in_upstream.py --listen 127.0.0.1:8100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

__all__ = ["COMPLETION_TOKENS", "PROMPT_TOKENS", "create_app", "main"]

PROMPT_TOKENS = 10
COMPLETION_TOKENS = 20
STREAM_CHUNKS = 4


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", "gpt-4o-mini"))
    created = int(time.time())
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hello " * 5},
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage(),
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunk = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": created}
    for index in range(STREAM_CHUNKS):
        delta = {"role": "assistant", "content": "hello "} if index == 0 else {"content": "hi "}
        event = {**chunk, "model": model, "choices": [{"index": 0, "delta": delta}]}
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
    final = {
        **chunk,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    await response.write(f"data: {json.dumps(final)}\n\n".encode())
    # Usage comes in a last chunk with no choices, as OpenAI sends it when asked with
    # stream_options.include_usage; sent always, so a proxy that does not ask still
    # sees it.
    usage_chunk = {**chunk, "model": model, "choices": [], "usage": _usage()}
    await response.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def models(_request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "x"}]}
    )


def create_app() -> web.Application:
    app = web.Application()
    for prefix in ("", "/v1"):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_get(f"{prefix}/models", models)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8100")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    try:
        import uvloop  # noqa: PLC0415  (optional speed-up, as the sidecar uses)

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(create_app(), host=host, port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
