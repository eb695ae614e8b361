"""Reading the request body: bounded in size and time, decoded, parsed.

A declared size over `--max-body-bytes` is refused before a byte is read, a slow body
after `--body-timeout`; either way the connection is closed, since the rest of the body
was left unread.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from llmquota.sidecar.exchange import Refusal
from llmquota.sidecar.state import SETTINGS
from llmquota.sidecar.wire import (
    BodyTooLargeError,
    InvalidBodyError,
    ParsedBody,
    decode_body,
    parse_body,
)

__all__ = ["read_body"]


async def read_body(request: web.Request) -> ParsedBody:
    """The parsed body; a declared or actual size over the limit, or a body slower than
    `--body-timeout`, is refused (the former before a byte of it is read)."""
    settings = request.app[SETTINGS]
    declared = request.content_length
    if declared is not None and declared > settings.max_body_bytes:
        raise _too_large(settings.max_body_bytes)
    try:
        if request.content.is_eof():  # the usual case: it came with the headers
            raw = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout):
                raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise _too_large(settings.max_body_bytes) from error
    except (web.RequestPayloadError, BadHttpMessage) as error:
        # e.g. a body that does not decode as its Content-Encoding says
        raise Refusal(
            400,
            f"The request body could not be read: {error}",
            "invalid_request_error",
            None,
            outcome="invalid_request",
            close_connection=True,
        ) from error
    except TimeoutError as error:
        raise Refusal(
            408,
            f"The request body did not arrive within {settings.body_timeout:g} seconds "
            "(--body-timeout).",
            "invalid_request_error",
            "request_timeout",
            outcome="invalid_request",
            close_connection=True,
        ) from error
    try:
        decoded = decode_body(
            raw, request.headers.get("Content-Encoding", ""), settings.max_body_bytes
        )
        return parse_body(decoded)
    except BodyTooLargeError as error:
        raise _too_large(settings.max_body_bytes) from error
    except InvalidBodyError as error:
        raise Refusal(
            error.status,
            str(error),
            "invalid_request_error",
            error.code,
            outcome="invalid_request",
            param=error.param,
        ) from error


def _too_large(limit: int) -> Refusal:
    return Refusal(
        413,
        f"The request body is larger than the sidecar's limit of {limit} bytes (--max-body-bytes).",
        "invalid_request_error",
        "request_too_large",
        outcome="invalid_request",
        close_connection=True,
    )
