"""How many tokens a request will use, guessed before it is sent, to reserve its cost.

No tokenizer is available offline, so prompts are measured with the usual rule of
thumb: one token per 4 characters, rounded up, plus `TOKENS_PER_MESSAGE` for the role
and separators of every chat message or Responses input item (OpenAI's cookbook counts
3-4), plus `REPLY_PRIMING_TOKENS` once per chat. An image part counts as
`TOKENS_PER_IMAGE` (OpenAI's price of a low-detail image). The completion side is the
request's own cap (`max_completion_tokens`, `max_tokens`, `max_output_tokens`) times the
number of completions asked for, or `default_max_completion_tokens` when it sets none.

Bodies come from clients, so nothing here raises: a field of an unexpected type counts
as zero tokens (or as no cap) instead of failing the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_MAX_COMPLETION_TOKENS",
    "MAX_CHOICES",
    "MAX_COMPLETION_TOKENS_CAP",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_IMAGE",
    "TOKENS_PER_MESSAGE",
    "TokenEstimate",
    "estimate_request",
    "requested_max_completion_tokens",
]

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3
TOKENS_PER_IMAGE = 85
DEFAULT_MAX_COMPLETION_TOKENS = 256
# No model writes more than this in one reply; capping keeps a hostile `max_tokens` of
# 10**30 from reaching arithmetic (and Redis) downstream as a number nothing can hold.
MAX_COMPLETION_TOKENS_CAP = 10_000_000
# OpenAI accepts at most 128 choices per request.
MAX_CHOICES = 128

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
# Where each endpoint takes its output cap, preferred field first (`max_tokens` is the
# deprecated spelling on chat).
_CAP_FIELDS: dict[str, tuple[str, ...]] = {
    "chat/completions": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """Tokens a request is expected to use: its prompt and the most it may generate."""

    prompt_tokens: int
    max_completion_tokens: int


def estimate_request(
    endpoint: str,
    body: object,
    *,
    default_max_completion_tokens: int = DEFAULT_MAX_COMPLETION_TOKENS,
) -> TokenEstimate:
    """Estimate `body` sent to `endpoint` (`/v1/chat/completions`, `completions`, ...).

    `body` is the parsed JSON body, normally a mapping; an endpoint this does not know, or
    a body that is not a JSON object, estimates to zero.
    """
    if not isinstance(body, Mapping):
        return TokenEstimate(0, 0)
    kind = _endpoint_kind(endpoint)
    cap = requested_max_completion_tokens(endpoint, body)
    completion_cap = default_max_completion_tokens if cap is None else cap
    if kind == "chat/completions":
        prompt = _chat_prompt_tokens(body)
        completion = completion_cap * _choices(body.get("n"))
    elif kind == "completions":
        prompts = _completion_prompts(body.get("prompt"))
        prompt = sum(_prompt_tokens(item) for item in prompts)
        choices = max(_choices(body.get("n")), _choices(body.get("best_of")))
        completion = completion_cap * choices * max(len(prompts), 1)
    elif kind == "embeddings":
        prompt = sum(_prompt_tokens(item) for item in _completion_prompts(body.get("input")))
        completion = 0
    elif kind == "responses":
        prompt = _responses_prompt_tokens(body)
        completion = completion_cap
    else:
        return TokenEstimate(0, 0)
    return TokenEstimate(prompt_tokens=prompt, max_completion_tokens=completion)


def requested_max_completion_tokens(endpoint: str, body: object) -> int | None:
    """The per-choice output cap the request sets itself, or None when it sets none."""
    if not isinstance(body, Mapping):
        return None
    for field in _CAP_FIELDS.get(_endpoint_kind(endpoint), ()):
        value = body.get(field)
        if _is_count(value):
            return min(value, MAX_COMPLETION_TOKENS_CAP)
    return None


def _endpoint_kind(endpoint: str) -> str:
    """`/v1/chat/completions` and `chat/completions` both become `chat/completions`."""
    return endpoint.split("?", 1)[0].strip("/").removeprefix("v1/")


def _is_count(value: object) -> TypeGuard[int]:
    """A non-negative int; bools are ints in Python but never counts in JSON."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _choices(value: Any) -> int:
    return min(value, MAX_CHOICES) if _is_count(value) and value > 0 else 1


def _text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def _chat_prompt_tokens(body: Mapping[str, Any]) -> int:
    messages = body.get("messages")
    tokens = 0
    if isinstance(messages, list):
        tokens = sum(_message_tokens(message) for message in messages) + REPLY_PRIMING_TOKENS
    # Tool and function definitions are sent to the model as part of the prompt.
    for field in ("tools", "functions"):
        tokens += _text_tokens_in(body.get(field))
    return tokens


def _message_tokens(message: Any) -> int:
    """One chat message or Responses input item: its text, tool calls and overhead."""
    if isinstance(message, str):
        return _text_tokens(message) + TOKENS_PER_MESSAGE
    if not isinstance(message, Mapping):
        return 0
    tokens = TOKENS_PER_MESSAGE + _content_tokens(message.get("content"))
    for field in ("name", "arguments", "output", "refusal"):
        value = message.get(field)
        if isinstance(value, str):
            tokens += _text_tokens(value)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        tokens += sum(_text_tokens_in(call) for call in tool_calls)
    return tokens


def _content_tokens(content: Any) -> int:
    """A message's `content`: a string, or a list of typed parts (text, image, ...)."""
    if isinstance(content, str):
        return _text_tokens(content)
    if not isinstance(content, list):
        return 0
    tokens = 0
    for part in content:
        if isinstance(part, str):
            tokens += _text_tokens(part)
        elif isinstance(part, Mapping):
            text = part.get("text")
            if isinstance(text, str):
                tokens += _text_tokens(text)
            elif part.get("type") in _IMAGE_PART_TYPES:
                tokens += TOKENS_PER_IMAGE
    return tokens


def _responses_prompt_tokens(body: Mapping[str, Any]) -> int:
    tokens = 0
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        tokens += _text_tokens(instructions)
    items = body.get("input")
    if isinstance(items, str):
        tokens += _text_tokens(items) + TOKENS_PER_MESSAGE
    elif isinstance(items, list):
        tokens += sum(_message_tokens(item) for item in items)
    return tokens + _text_tokens_in(body.get("tools"))


def _completion_prompts(prompt: Any) -> list[Any]:
    """The separate prompts of a completions/embeddings input: one, or a batch.

    A flat list of ints is one tokenized prompt; any other list is a batch.
    """
    if isinstance(prompt, list) and not (prompt and all(_is_token_id(item) for item in prompt)):
        return prompt
    return [prompt]


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prompt_tokens(prompt: Any) -> int:
    """A text prompt by the character rule, a tokenized one (list of ints) exactly."""
    if isinstance(prompt, str):
        return _text_tokens(prompt)
    if isinstance(prompt, list) and all(_is_token_id(item) for item in prompt):
        return len(prompt)
    return 0


def _text_tokens_in(value: Any) -> int:
    """Tokens of every string inside arbitrarily nested JSON, without recursion limits."""
    chars = 0
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, Mapping):
            pending.extend(key for key in item if isinstance(key, str))
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return -(-chars // CHARS_PER_TOKEN)
