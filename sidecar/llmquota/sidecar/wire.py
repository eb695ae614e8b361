"""Pure helpers for what crosses the wire: keys, bodies, headers, usage, error envelopes.

Nothing here does I/O, so every rule about what the client sends, what goes upstream
and what comes back is unit-tested without a server.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llmquota.pricing.reported_usage import reported_token_count

__all__ = [
    "CLIENT_KEY_HEADERS",
    "FORWARDED_HEADERS",
    "FORWARDED_HEADER_PREFIXES",
    "BodyTooLargeError",
    "InvalidBodyError",
    "ParsedBody",
    "Usage",
    "UsageTail",
    "client_response_headers",
    "decode_body",
    "error_body",
    "json_value",
    "narrow_model_list",
    "parse_body",
    "presented_key",
    "redact",
    "redact_bytes",
    "stream_asks_usage",
    "upstream_request_headers",
    "usage_in_body",
    "usage_of",
    "with_stream_usage",
    "with_stream_usage_raw",
]

CLIENT_KEY_HEADERS = ("authorization", "api-key", "x-api-key")

# Never forwarded in either direction: they describe one hop, or they are recomputed.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        # aiohttp decompresses the upstream's body, so its encoding no longer applies.
        "accept-encoding",
        "content-encoding",
    }
)
# The client's headers that go upstream: what OpenAI's API and SDKs use to describe a
# request. Everything else stays here: the client's credentials (the upstream gets the
# sidecar's), cookies, and headers that would speak for the sidecar's account or origin
# (`OpenAI-Organization`, `OpenAI-Project` pick whose quota the sidecar's key bills;
# `Forwarded`, `X-Forwarded-*` claim where the request came from). `--forward-header`
# adds names.
FORWARDED_HEADERS = frozenset(
    {
        "accept",
        "content-type",
        "user-agent",
        "openai-beta",
        "idempotency-key",
        "traceparent",
        "tracestate",
    }
)
FORWARDED_HEADER_PREFIXES = ("x-stainless-",)  # the official SDKs' own (language, retry count)
REDACTED = "[redacted]"
# The sidecar's own limits replace whatever the upstream reports about its account.
_OWN_RESPONSE_PREFIXES = ("x-ratelimit-", "x-llmquota-")


class InvalidBodyError(ValueError):
    """A body the sidecar cannot act on: 400 (or `status`) invalid_request_error."""

    def __init__(
        self, message: str, param: str | None = None, *, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


class BodyTooLargeError(ValueError):
    """A body whose decoded size passes the limit."""


_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS  # zlib detects which header the data has
_DECODERS = {"gzip": _GZIP_OR_ZLIB, "x-gzip": _GZIP_OR_ZLIB, "deflate": _GZIP_OR_ZLIB}


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """The body as the client meant it: `Content-Encoding` (gzip, deflate) undone, never
    to more than `limit` bytes (BodyTooLargeError as soon as it would be: a small
    compressed body can inflate to gigabytes)."""
    encoding = content_encoding.strip().lower()
    if encoding in {"", "identity"}:
        return raw
    wbits = _DECODERS.get(encoding)
    if wbits is None:
        msg = f"Content-Encoding {content_encoding!r} is not supported; use gzip or deflate."
        raise InvalidBodyError(msg, status=415, code="unsupported_content_encoding")
    decoder = zlib.decompressobj(wbits)
    try:
        decoded = decoder.decompress(raw, limit + 1)
        if len(decoded) > limit or decoder.unconsumed_tail:
            raise BodyTooLargeError
        decoded += decoder.flush()
    except zlib.error as error:
        msg = f"The request body is not valid {encoding}: {error}"
        raise InvalidBodyError(msg) from error
    if len(decoded) > limit:
        raise BodyTooLargeError
    if not decoder.eof:
        raise InvalidBodyError(f"The request body is a truncated {encoding} stream.")
    return decoded


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """The fields of a request body the sidecar acts on, and the body itself."""

    body: dict[str, Any]
    model: str
    stream: bool
    end_user: str | None
    raw: bytes = b""  # the JSON as received (decoded), forwarded as is when unchanged


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the upstream reported for one request."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0

    @property
    def total(self) -> int:
        """Input plus output tokens, as rate limits count them."""
        return self.prompt_tokens + self.completion_tokens


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The virtual key from `Authorization: Bearer`, `api-key` or `x-api-key`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return credential.strip()
    for name in CLIENT_KEY_HEADERS[1:]:
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    return None


# 19 digits in a row: a number orjson might read past 64 bits (it makes those floats).
# Found as a run of zeros once every digit is a zero: bytes.translate and `in` scan in C,
# several times faster than the regular expression `\d{19}` (ASCII digits in bytes).
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_DIGIT_RUN = b"0" * 19
# Fewer brackets than this cannot nest deeper than the standard library reads (about
# 900 levels, its recursion limit less the sidecar's stack), so orjson (which reads 1024)
# takes nothing the standard library would refuse as nested too deeply.
_FEW_BRACKETS = 512


def json_value(raw: bytes) -> Any:
    """JSON text as Python: orjson's parser (several times the standard library's speed)
    on the hot path, and the standard library's for what orjson refuses (NaN, UTF-16
    text) or reads otherwise (integers past 64 bits, which it makes floats; deeper
    nesting), so that what is accepted, what it means, and how it is refused
    (ValueError, RecursionError) stay as they were."""
    few_brackets = raw.count(b"[") + raw.count(b"{") < _FEW_BRACKETS
    if few_brackets and _LONG_DIGIT_RUN not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def parse_body(raw: bytes) -> ParsedBody:
    """The JSON object of a POST, checked for what the sidecar needs; raises InvalidBodyError."""
    try:
        body = json_value(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidBodyError(f"The request body is not valid JSON: {error}") from error
    except RecursionError as error:
        raise InvalidBodyError("The request body is nested too deeply.") from error
    if not isinstance(body, dict):
        raise InvalidBodyError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidBodyError("You must provide a model parameter.", param="model")
    user = body.get("user")
    end_user = user if isinstance(user, str) and user else None
    # Both name counters in the store: JSON's `\ud800` (a lone surrogate) is text Python
    # accepts but no store key or Lua string can hold.
    for param, name in (("model", model), ("user", end_user)):
        if name is not None and not _is_unicode_text(name):
            raise InvalidBodyError(f"`{param}` must be valid Unicode text.", param=param)
    return ParsedBody(
        body=body, model=model, stream=body.get("stream") is True, end_user=end_user, raw=raw
    )


def _is_unicode_text(text: str) -> bool:
    """False for strings holding lone surrogates (they have no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stream_asks_usage(body: Mapping[str, Any]) -> bool:
    """Whether a chat/completions stream asked for the final usage chunk itself."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def with_stream_usage(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body with `stream_options.include_usage` set, so the stream reports usage."""
    options = body.get("stream_options")
    kept = dict(options) if isinstance(options, Mapping) else {}
    return {**body, "stream_options": {**kept, "include_usage": True}}


_ASK_USAGE = b',"stream_options":{"include_usage":true}}'


def with_stream_usage_raw(parsed: ParsedBody) -> bytes:
    """`with_stream_usage` as the bytes to send: a body without `stream_options` is sent
    as received with the option added before its closing brace (nothing else of it is
    re-encoded); one with `stream_options` is re-encoded with the option merged in."""
    raw = parsed.raw.rstrip()
    # An object in UTF-8 (or ASCII) text starts with `{` and ends with `}`; UTF-16 or -32
    # text would not, and is re-encoded.
    if "stream_options" not in parsed.body and raw.endswith(b"}") and raw.lstrip()[:1] == b"{":
        return raw[:-1] + _ASK_USAGE
    return json.dumps(with_stream_usage(parsed.body)).encode()


def upstream_request_headers(
    client_headers: Iterable[tuple[str, str]],
    credential: str | None,
    also_forwarded: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Headers for the upstream: the client's that are allowed (`FORWARDED_HEADERS`,
    `also_forwarded`: lower-case names), plus the sidecar's credential."""
    headers = {name: value for name, value in client_headers if _is_forwarded(name, also_forwarded)}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    return headers


# A client sends the same few header names on every request: each name's verdict is
# kept (bounded, since names are the client's to choose).
@functools.lru_cache(maxsize=1024)
def _is_forwarded(name: str, also_forwarded: frozenset[str]) -> bool:
    lower = name.lower()
    return (
        lower in FORWARDED_HEADERS
        or lower in also_forwarded
        or lower.startswith(FORWARDED_HEADER_PREFIXES)
    )


def client_response_headers(
    upstream_headers: Iterable[tuple[str, str]],
    own_headers: Mapping[str, str],
    credential: str | None = None,
) -> dict[str, str]:
    """The upstream's response headers, with the sidecar's limits and budget instead of
    the upstream's, and never the upstream's `credential` (an echo of the request)."""
    # `redact` leaves a value without the credential's last four characters as it is:
    # that test, made here, spares a call per header.
    tail = credential[-4:] if credential and len(credential) >= 8 else None
    headers = {
        name: redact(value, credential) if tail is not None and tail in value else value
        for name, value in upstream_headers
        if _is_relayed(name)
    }
    headers.update(own_headers)
    return headers


@functools.lru_cache(maxsize=1024)  # the upstream's header names repeat, as a client's do
def _is_relayed(name: str) -> bool:
    lower = name.lower()
    return lower not in _HOP_BY_HOP and not lower.startswith(_OWN_RESPONSE_PREFIXES)


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret`, whole or masked as APIs show keys (`sk-...abcd`,
    `sk-proj-****abcd`: its start, a run of dots or stars, its last four characters)."""
    if not secret or len(secret) < 8 or secret[-4:] not in text:
        return text
    text = text.replace(secret, REDACTED)
    return _masked_form(secret).sub(REDACTED, text)


def redact_bytes(body: bytes, secret: str | None) -> bytes:
    """`redact` for a body in any encoding (bytes that are not UTF-8 pass unchanged)."""
    if not secret or secret[-4:].encode() not in body:
        return body
    return redact(body.decode("utf-8", "surrogateescape"), secret).encode(
        "utf-8", "surrogateescape"
    )


@functools.lru_cache(maxsize=4)  # the credential rotates now and then, not per request
def _masked_form(secret: str) -> re.Pattern[str]:
    start, end = re.escape(secret[:3]), re.escape(secret[-4:])
    return re.compile(rf"(?:{start}[\w-]*?)?(?:\*{{3,}}|\.{{3,}}|…|•{{3,}})[\w-]*?{end}(?![\w])")


def usage_of(usage: Any) -> Usage | None:
    """Chat/completions/embeddings usage (`prompt_tokens`, ...) or Responses usage
    (`input_tokens`, ...) as one shape; None when absent or malformed (a count that is
    negative, not an integer, or absurd), so the request is charged from its estimate."""
    if usage is None or not isinstance(usage, Mapping):  # None: most stream chunks
        return None
    if "input_tokens" in usage or "output_tokens" in usage:
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
        details = usage.get("input_tokens_details")
    elif "prompt_tokens" in usage:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
    else:
        return None
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
    counts = [reported_token_count(value) for value in (prompt, completion, cached)]
    if None in counts:
        return None
    prompt_count, completion_count, cached_count = (count or 0 for count in counts)
    return Usage(prompt_count, completion_count, cached_count)


def narrow_model_list(raw: bytes, allowed: Collection[str]) -> bytes | None:
    """A `GET /models` answer with only the `allowed` models; None when it is not a list
    of models (the upstream's full list must not pass unfiltered)."""
    try:
        listing: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    models = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(models, list):
        return None
    listing["data"] = [
        model for model in models if isinstance(model, dict) and model.get("id") in allowed
    ]
    return json.dumps(listing).encode()


def usage_in_body(raw: bytes) -> Usage | None:
    """The `usage` of a whole JSON answer; None when it is not JSON or has none."""
    try:
        answer: Any = json_value(raw)
    except (ValueError, RecursionError):
        return None
    return usage_of(answer.get("usage")) if isinstance(answer, dict) else None


USAGE_TAIL_BYTES = 64 * 1024
_USAGE_KEY = b'"usage"'


class UsageTail:
    """The last `USAGE_TAIL_BYTES` of a JSON answer too large to hold, and its `usage`.

    Chat, completions, embeddings and Responses answers put the top-level `usage` object
    at (or near) their end. Inside JSON strings a quote is escaped, so the last
    `"usage"` key in the tail that parses as an object is the answer's own.
    """

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the answer."""
        self._tail = (self._tail + chunk[-USAGE_TAIL_BYTES:])[-USAGE_TAIL_BYTES:]

    def usage(self) -> Usage | None:
        """The usage of the answer whose end has been fed; None when not found."""
        decoder = json.JSONDecoder()
        end = len(self._tail)
        while (start := self._tail.rfind(_USAGE_KEY, 0, end)) >= 0:
            end = start
            rest = self._tail[start + len(_USAGE_KEY) :].decode("utf-8", "replace").lstrip()
            if not rest.startswith(":"):
                continue
            try:
                value, _ = decoder.raw_decode(rest[1:].lstrip())
            except (ValueError, RecursionError):
                continue
            found = usage_of(value)
            if found is not None:
                return found
        return None


def error_body(message: str, error_type: str, code: str | None, param: str | None = None) -> bytes:
    """OpenAI's error envelope, serialized."""
    envelope = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json.dumps(envelope).encode()
