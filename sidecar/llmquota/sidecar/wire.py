"""Pure helpers for what crosses the wire: keys, bodies, headers, usage, error envelopes.

Nothing here does I/O, so every rule about what the client sends, what goes upstream
and what comes back is unit-tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmquota.pricing.reported_usage import reported_token_count

__all__ = [
    "CLIENT_KEY_HEADERS",
    "InvalidBodyError",
    "ParsedBody",
    "Usage",
    "client_response_headers",
    "error_body",
    "parse_body",
    "presented_key",
    "stream_asks_usage",
    "upstream_request_headers",
    "usage_of",
    "with_stream_usage",
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
# The client's credentials stay here; the upstream gets the sidecar's own.
_NOT_UPSTREAM = _HOP_BY_HOP | set(CLIENT_KEY_HEADERS) | {"cookie", "x-request-id"}
# The sidecar's own limits replace whatever the upstream reports about its account.
_OWN_RESPONSE_PREFIXES = ("x-ratelimit-", "x-llmquota-")


class InvalidBodyError(ValueError):
    """A body the sidecar cannot act on: 400 invalid_request_error with this message."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """The fields of a request body the sidecar acts on, and the body itself."""

    body: dict[str, Any]
    model: str
    stream: bool
    end_user: str | None


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


def parse_body(raw: bytes) -> ParsedBody:
    """The JSON object of a POST, checked for what the sidecar needs; raises InvalidBodyError."""
    try:
        body = json.loads(raw)
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
    return ParsedBody(body=body, model=model, stream=body.get("stream") is True, end_user=end_user)


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


def upstream_request_headers(
    client_headers: Iterable[tuple[str, str]], credential: str | None
) -> dict[str, str]:
    """Headers for the upstream: the client's minus its credentials, plus the sidecar's."""
    headers = {name: value for name, value in client_headers if name.lower() not in _NOT_UPSTREAM}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    return headers


def client_response_headers(
    upstream_headers: Iterable[tuple[str, str]], own_headers: Mapping[str, str]
) -> dict[str, str]:
    """The upstream's response headers, with the sidecar's limits and budget instead of
    the upstream's."""
    headers = {
        name: value
        for name, value in upstream_headers
        if name.lower() not in _HOP_BY_HOP and not name.lower().startswith(_OWN_RESPONSE_PREFIXES)
    }
    headers.update(own_headers)
    return headers


def usage_of(usage: Any) -> Usage | None:
    """Chat/completions/embeddings usage (`prompt_tokens`, ...) or Responses usage
    (`input_tokens`, ...) as one shape; None when absent or malformed (a count that is
    negative, not an integer, or absurd), so the request is charged from its estimate."""
    if not isinstance(usage, Mapping):
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


def error_body(message: str, error_type: str, code: str | None, param: str | None = None) -> bytes:
    """OpenAI's error envelope, serialized."""
    envelope = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json.dumps(envelope).encode()
