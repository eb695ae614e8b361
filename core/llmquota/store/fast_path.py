"""The hot path's Redis calls: EVALSHA on one pipelined connection, parsed by hiredis.

Every proxied request makes two store calls, an admission and a settle, both EVALSHA of
a script known at start-up. Through redis-py each costs about 0.1 ms of CPU in its
layers (pool checkout, retry wrapper, health check, timeout context, command packing,
parser dispatch), together more than a third of what a bare aiohttp proxy spends on a
whole request. This module does only what those two calls need: one connection, the
commands of all concurrent requests written together (one write per event-loop turn),
their answers matched to them in order (Redis answers a connection's commands in the
order it received them) and parsed by hiredis' Reader, the C parser redis-py uses too.

What it keeps of redis-py's behaviour, so that callers cannot tell the two apart:
- errors are redis-py's classes: ResponseError (and its subclasses) for a script's
  error, ConnectionError when the server cannot be reached or drops the connection
  (BusyLoadingError while it loads its data), TimeoutError when it does not answer;
- NOSCRIPT (a restarted or flushed server forgot the script): the call is sent again as
  EVAL with the source, which loads it;
- a call not answered within `timeout_s` fails, and the connection is closed with it
  (an answer arriving later would be taken for the next call's);
- a call that meets a lost or refused connection is retried on a new one, `RETRIES`
  times with jittered backoff (about 1 s in all), as `store.connection`'s Retry does,
  so a Redis restart costs a request a retry, not an error (and, as with redis-py, a
  call whose answer was lost with the connection may run twice: the scripts are
  written to be run again by the same request id);
- AUTH (the URL's user and password, or the password file, read for every new
  connection) and SELECT of the URL's database.

It serves `redis://` and `unix://` URLs (`FastScripts.for_url` says None for the rest:
TLS, Sentinel and URLs with connection options keep redis-py, as do settles that WAIT
for replicas, since a WAIT would hold every other call on the shared connection).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import math
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llmquota.store.connection import PasswordFile, RedisUrlError, parse_redis_url

__all__ = ["RETRIES", "FastScripts", "LuaScript"]

RETRIES = 4
_RETRY_BASE_S = 0.05
_RETRY_CAP_S = 0.5
_DEFAULT_PORT = 6379
# Error replies whose first word names a class of redis-py's; the rest are ResponseError.
_ERROR_CLASSES: dict[str, type[ResponseError] | type[RedisConnectionError]] = {
    "NOSCRIPT": NoScriptError,
    "LOADING": BusyLoadingError,
    "READONLY": ReadOnlyError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
}


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and its SHA1 (what EVALSHA names it by)."""

    source: bytes
    sha: bytes

    @classmethod
    def of(cls, source: str) -> LuaScript:
        """The script of `source`."""
        encoded = source.encode()
        return cls(encoded, hashlib.sha1(encoded, usedforsecurity=False).hexdigest().encode())


def _encode(parts: Sequence[bytes | str | int]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _script_call(
    verb: bytes, name: bytes, keys: Sequence[str], args: Sequence[bytes | str | int]
) -> bytes:
    return _encode([verb, name, len(keys), *keys, *args])


def _error(reply: ResponseError) -> Exception:
    """The redis-py exception of an error reply (hiredis makes every one a ResponseError)."""
    message = str(reply)
    code = message.split(" ", 1)[0]
    error_class = _ERROR_CLASSES.get(code)
    if error_class is None:
        return reply
    return error_class(message.removeprefix(code).lstrip())


class _Pipe(asyncio.Protocol):
    """One connection: commands written in order, answers handed out in that order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float | None) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(replyError=ResponseError)
        # (answer, deadline) of each command sent, oldest first.
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._unsent: list[bytes] = []
        self._flush_due = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    @property
    def usable(self) -> bool:
        """Connected and not lost."""
        return self._transport is not None and self.lost is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; TCP without Nagle's delay, with keep-alive probes."""
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Queue `command` (written at the end of this loop turn); its answer's future."""
        if self.lost is not None:
            msg = f"the connection to Redis is gone ({self.lost})"
            raise RedisConnectionError(msg)
        answer: asyncio.Future[Any] = self._loop.create_future()
        timeout_s = self._timeout_s
        self._waiting.append(
            (answer, math.inf if timeout_s is None else self._loop.time() + timeout_s)
        )
        self._unsent.append(command)
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)
        if self._watchdog is None and timeout_s is not None:
            self._watchdog = self._loop.call_later(timeout_s, self._check_deadline)
        return answer

    def _flush(self) -> None:
        self._flush_due = False
        if self._transport is not None and self.lost is None and self._unsent:
            self._transport.write(b"".join(self._unsent))
        self._unsent.clear()

    def data_received(self, data: bytes) -> None:
        """Hand each complete answer to the oldest command waiting."""
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as error:
                self.fail(RedisConnectionError(f"Redis sent a malformed answer: {error}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self.fail(RedisConnectionError("Redis sent an answer to no command"))
                return
            answer, _ = self._waiting.popleft()
            if answer.done():  # its caller gave up (cancelled); the answer is dropped
                continue
            if isinstance(reply, ResponseError):
                answer.set_exception(_error(reply))
            else:
                answer.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail what still waits: Redis closed the connection or it broke."""
        reason = f": {exc}" if exc is not None else ""
        self.fail(RedisConnectionError(f"Connection to Redis lost{reason}"))

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        overdue_s = self._loop.time() - self._waiting[0][1]
        if overdue_s >= 0:
            self.fail(RedisTimeoutError(f"Redis did not answer within {self._timeout_s} s"))
            return
        self._watchdog = self._loop.call_later(-overdue_s, self._check_deadline)

    def fail(self, error: Exception) -> None:
        """Close the connection; every command still waiting fails with `error`."""
        if self.lost is None:
            self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.abort()
        while self._waiting:
            answer, _ = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(error)


@dataclass(frozen=True, slots=True)
class _Address:
    """Where the server is, and what to say to it on each new connection."""

    host: str = ""
    port: int = _DEFAULT_PORT
    path: str = ""  # a Unix socket, instead of host and port
    db: int = 0
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None

    def handshake(self) -> list[bytes]:
        """AUTH and SELECT, as needed; a password file is read now (it may rotate)."""
        commands = []
        password = self.password
        if self.password_file is not None:
            try:
                password = PasswordFile(self.password_file).read()
            except RedisUrlError as error:
                raise AuthenticationError(str(error)) from None
        if password is not None:
            user = [] if self.username is None else [self.username]
            commands.append(_encode([b"AUTH", *user, password]))
        if self.db:
            commands.append(_encode([b"SELECT", self.db]))
        return commands

    @property
    def shown(self) -> str:
        """For messages: the address, never the password."""
        return f"unix://{self.path}" if self.path else f"{self.host}:{self.port}"


class FastScripts:
    """Runs scripts by SHA on one pipelined connection, opened on first use and again
    after it is lost; safe for any number of concurrent callers on one event loop."""

    def __init__(
        self, address: _Address, *, timeout_s: float | None, connect_timeout_s: float | None
    ) -> None:
        """`timeout_s`: longest wait for an answer, `connect_timeout_s` for a connection
        (None: no limit, as redis-py's socket timeouts)."""
        self._address = address
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pipe: _Pipe | None = None
        self._connecting: asyncio.Task[_Pipe] | None = None
        self._closed = False

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        password_file: Path | None = None,
        timeout_s: float | None,
        connect_timeout_s: float | None,
    ) -> FastScripts | None:
        """For a `redis://` or `unix://` URL without connection options (`db` aside);
        None for the others, which stay with redis-py."""
        location = parse_redis_url(url)
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if location.kind != "single" or location.tls or set(query) - {"db"}:
            return None
        db_text = query.get("db", [""])[0] or parts.path.strip("/")
        if parts.scheme == "unix":
            db_text = query.get("db", [""])[0]
        if db_text and not db_text.isdigit():
            return None
        address = _Address(
            host=parts.hostname or "",
            port=parts.port or _DEFAULT_PORT,
            path=unquote(parts.path) if parts.scheme == "unix" else "",
            db=int(db_text or 0),
            username=location.username,
            password=None if password_file is not None else location.password,
            password_file=password_file,
        )
        return cls(address, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)

    async def run(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[bytes | str | int]
    ) -> Any:
        """The script's answer (EVALSHA, or EVAL once when the server forgot it)."""
        for attempt in range(RETRIES + 1):
            try:
                pipe = self._pipe
                if pipe is None or not pipe.usable:
                    pipe = await self._connected()
                try:
                    return await pipe.send(_script_call(b"EVALSHA", script.sha, keys, args))
                except NoScriptError:
                    return await pipe.send(_script_call(b"EVAL", script.source, keys, args))
            except RedisConnectionError:
                if attempt == RETRIES or self._closed:
                    raise
            backoff_s = min(_RETRY_CAP_S, _RETRY_BASE_S * 2**attempt)
            await asyncio.sleep(backoff_s * random.random())
        msg = "unreachable: the last attempt returns or raises"
        raise AssertionError(msg)

    async def _connected(self) -> _Pipe:
        """The connection, opened once for all the callers that need it at the time."""
        if self._closed:
            msg = "the store is closed"
            raise RedisConnectionError(msg)
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, task: asyncio.Task[_Pipe]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._pipe = task.result()

    async def _open(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        address = self._address
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if address.path:
                    _, pipe = await loop.create_unix_connection(
                        lambda: _Pipe(loop, self._timeout_s), address.path
                    )
                else:
                    _, pipe = await loop.create_connection(
                        lambda: _Pipe(loop, self._timeout_s), address.host, address.port
                    )
        except (OSError, TimeoutError) as error:
            reason = str(error) or "timed out"
            msg = f"Error connecting to Redis at {address.shown}: {reason}"
            raise RedisConnectionError(msg) from None
        try:
            answers = [pipe.send(command) for command in address.handshake()]
            replies = await asyncio.gather(*answers, return_exceptions=True)
        except BaseException:
            pipe.fail(RedisConnectionError("handshake failed"))
            raise
        for reply in replies:
            if isinstance(reply, BaseException):
                pipe.fail(RedisConnectionError("handshake refused"))
                if isinstance(reply, ResponseError):
                    raise AuthenticationError(str(reply)) from None
                raise reply
        return pipe

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with ConnectionError."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._pipe is not None:
            self._pipe.fail(RedisConnectionError("the store is closed"))
            self._pipe = None
