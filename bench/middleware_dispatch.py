"""Micro-benchmark: what aiohttp's `@web.middleware` adds to every request's dispatch.

The sidecar's refusal→response and request recording wrap each proxy route's handler
when the route is added (`sidecar/recording.py`) instead of being an aiohttp middleware.
This measures why: the same no-op wrapper both ways, around a handler that returns a
ready response, through `Application._handle` (routing and dispatch, no sockets).

    .venv/bin/python bench/middleware_dispatch.py
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.typedefs import Handler

CALLS = 50_000
ROUNDS = 15
_ANSWER = web.Response(text="ok")


async def _handler(request: web.Request) -> web.StreamResponse:
    return _ANSWER


def _wrapped(handler: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            pass

    return handle


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    finally:
        pass


def _app(*, as_middleware: bool) -> web.Application:
    app = web.Application(middlewares=[_middleware] if as_middleware else [])
    app.router.add_post("/v1/chat/completions", _handler if as_middleware else _wrapped(_handler))
    app.freeze()
    return app


async def _round_us(app: web.Application, request: web.Request) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        await app._handle(request)  # the dispatch is what is measured
    return (time.perf_counter() - started) / CALLS * 1e6


async def main() -> None:
    """Print the best per-request dispatch time of each way, their rounds interleaved so
    that the machine's load weighs on both alike."""
    apps = {way: _app(as_middleware=way == "middleware") for way in ("wrapper", "middleware")}
    requests = {
        way: make_mocked_request("POST", "/v1/chat/completions", app=app)
        for way, app in apps.items()
    }
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(ROUNDS):
        for way, app in apps.items():
            best[way] = min(best[way], await _round_us(app, requests[way]))
    print(
        f"per-route wrapper {best['wrapper']:.2f} us, aiohttp middleware "
        f"{best['middleware']:.2f} us per request (best of {ROUNDS} interleaved rounds of "
        f"{CALLS:,})"
    )


if __name__ == "__main__":
    asyncio.run(main())
