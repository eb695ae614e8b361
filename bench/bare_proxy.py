"""The floor: a bare aiohttp + uvloop pass-through proxy, with no checks at all.

bench/floors.py measures llmquota's sidecar beside this, so that "CPU per request" has a
physical floor in Python next to it: the same aiohttp, the same uvloop, one keep-alive
upstream session, the request body read and forwarded as bytes, the answer relayed chunk
by chunk. With `--redis URL` it also makes two EVALSHA round trips per request (redis-py
with hiredis), one before forwarding and one after, the store traffic an admission and a
settlement cost at the least; with `--fast-path` too, those two go through llmquota's
own pipelined call path (llmquota.store.fast_path) instead of redis-py.

    python bench/bare_proxy.py --upstream http://127.0.0.1:9000 [--listen H:P] [--redis URL]
        [--fast-path]
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web
from redis.asyncio import Redis

from llmquota.store.fast_path import FastScripts, LuaScript

# Bumps a counter, as a stand-in for an admit and a settle script: one round trip each.
SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})
UPSTREAM: web.AppKey[aiohttp.ClientSession] = web.AppKey("upstream", aiohttp.ClientSession)


def make_app(upstream: str, redis_url: str | None, fast_path: bool) -> web.Application:
    redis = None if redis_url is None else Redis.from_url(redis_url)
    sha: list[str] = []
    fast = None
    if redis_url is not None and fast_path:
        fast = FastScripts.for_url(redis_url, timeout_s=2.0, connect_timeout_s=2.0)
    fast_script = LuaScript.of(SCRIPT)

    async def store_round_trip() -> None:
        if fast is not None:
            await fast.run(fast_script, ["bench:bare"], [1])
        elif redis is not None:
            if not sha:
                sha.append(await redis.script_load(SCRIPT))
            await redis.evalsha(sha[0], 1, "bench:bare", 1)

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        await store_round_trip()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with request.app[UPSTREAM].request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            response = web.StreamResponse(status=answer.status)
            for name, value in answer.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers[name] = value
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
        await response.write_eof()
        await store_round_trip()
        return response

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=0)
        app[UPSTREAM] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        yield
        await app[UPSTREAM].close()
        if redis is not None:
            await redis.aclose()
        if fast is not None:
            await fast.close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:4100")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--redis", default=None, help="also two EVALSHA round trips a request")
    parser.add_argument(
        "--fast-path", action="store_true", help="make them through llmquota.store.fast_path"
    )
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    uvloop.install()
    web.run_app(
        make_app(args.upstream.rstrip("/"), args.redis, args.fast_path),
        host=host,
        port=int(port),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
