"""How many tokens a request will use, bounded before it is sent, to reserve its cost.

Both sides are upper bounds, so that concurrent requests cannot overshoot a budget by more
than one request's cost:

- The prompt: every text is counted by the model's own tokenizer where its encoding is
  known, and by its UTF-8 bytes (a bound no byte-level BPE exceeds) otherwise; see
  `tokenizer.py`. Each chat message or Responses input item adds `TOKENS_PER_MESSAGE` for
  its role and separators (OpenAI counts 3), each chat `REPLY_PRIMING_TOKENS` once, an image
  part `TOKENS_PER_IMAGE` (a low-detail image).
- The output: per choice, the request's own cap (`max_completion_tokens`, `max_tokens`,
  `max_output_tokens`), but never more than fits in the model's context window beside the
  prompt (`context_window`, from the price library; `DEFAULT_CONTEXT_WINDOW` for a model it
  does not know), times the completions asked for (`n`, `best_of`) and, on
  `/v1/completions`, the prompts of a batch. A request that sets no cap reserves what the
  model can write at most, not a guess that a long answer would pass.

Bodies come from clients, so nothing here raises: a field of an unexpected type counts
as zero tokens (or as no cap) instead of failing the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from llmquota.pricing.tokenizer import TextMeter, encoding_for_model

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "MAX_CHOICES",
    "MAX_COMPLETION_TOKENS_CAP",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_IMAGE",
    "TOKENS_PER_MESSAGE",
    "TokenEstimate",
    "estimate_request",
    "requested_max_completion_tokens",
]

TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3
TOKENS_PER_IMAGE = 85
DEFAULT_CONTEXT_WINDOW = 128_000
"""Context window assumed for a model the price library does not know (gpt-4o's)."""
# Keeps a hostile `max_tokens` of 10**30 out of arithmetic; the context window caps lower.
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
    """Tokens a request may use at most: its prompt and its output, over all choices.

    `capped_by_model`: the output reserved is the model's limit, lower than the request's
    own cap (or it set none), so the upstream is not asked to stop there; a stream that
    passes it is stopped by the sidecar.
    """

    prompt_tokens: int
    max_completion_tokens: int
    capped_by_model: bool = False

    @property
    def total(self) -> int:
        """Prompt plus output, as rate limits count tokens."""
        return self.prompt_tokens + self.max_completion_tokens


def estimate_request(
    endpoint: str, body: object, *, context_window: int = DEFAULT_CONTEXT_WINDOW
) -> TokenEstimate:
    """Bound `body` sent to `endpoint` (`/v1/chat/completions`, `completions`, ...).

    `body` is the parsed JSON body, normally a mapping; an endpoint this does not know, or
    a body that is not a JSON object, estimates to zero.
    """
    if not isinstance(body, Mapping):
        return TokenEstimate(0, 0)
    model = body.get("model")
    counter = _PromptCounter(TextMeter(encoding_for_model(model if isinstance(model, str) else "")))
    kind = _endpoint_kind(endpoint)
    output = _OutputRoom(_requested_cap(kind, body), context_window)
    if kind == "chat/completions":
        prompt = counter.chat(body)
        completion = output.per_choice(counter.meter.exact) * _choices(body.get("n"))
    elif kind == "completions":
        choices = max(_choices(body.get("n")), _choices(body.get("best_of")))
        prompt = completion = 0
        for item in _completion_prompts(body.get("prompt")):
            exact_before = counter.meter.exact
            prompt += counter.prompt(item)
            completion += output.per_choice(counter.meter.exact - exact_before) * choices
    elif kind == "embeddings":
        prompt = sum(counter.prompt(item) for item in _completion_prompts(body.get("input")))
        completion = 0
    elif kind == "responses":
        prompt = counter.responses(body)
        completion = output.per_choice(counter.meter.exact)
    else:
        return TokenEstimate(0, 0)
    return TokenEstimate(prompt, completion, capped_by_model=output.capped_by_model)


@dataclass(slots=True)
class _OutputRoom:
    """The output one choice may write: its own cap, or what the context window leaves."""

    requested: int | None
    context_window: int
    capped_by_model: bool = False

    def per_choice(self, prompt_floor: int) -> int:
        """`prompt_floor`: tokens the prompt holds at least (the tokenizer's exact count)."""
        room = max(self.context_window - prompt_floor, 0)
        if self.requested is not None and self.requested <= room:
            return self.requested
        self.capped_by_model = True
        return room


def requested_max_completion_tokens(endpoint: str, body: object) -> int | None:
    """The per-choice output cap the request sets itself, or None when it sets none."""
    if not isinstance(body, Mapping):
        return None
    return _requested_cap(_endpoint_kind(endpoint), body)


def _requested_cap(kind: str, body: Mapping[str, Any]) -> int | None:
    """The output cap of a body sent to an endpoint of `kind` (`_endpoint_kind`)."""
    for field in _CAP_FIELDS.get(kind, ()):
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


class _PromptCounter:
    """The prompt tokens of one request's body, every text counted by one `TextMeter`."""

    def __init__(self, meter: TextMeter) -> None:
        self.meter = meter

    def chat(self, body: Mapping[str, Any]) -> int:
        messages = body.get("messages")
        tokens = 0
        if isinstance(messages, list):
            tokens = sum(self.message(message) for message in messages) + REPLY_PRIMING_TOKENS
        # Tool and function definitions are sent to the model as part of the prompt.
        for field in ("tools", "functions"):
            tokens += self.nested(body.get(field))
        return tokens

    def message(self, message: Any) -> int:
        """One chat message or Responses input item: its text, tool calls and overhead."""
        if isinstance(message, str):
            return self.meter.count(message) + TOKENS_PER_MESSAGE
        if not isinstance(message, Mapping):
            return 0
        tokens = TOKENS_PER_MESSAGE + self.content(message.get("content"))
        for field in ("name", "arguments", "output", "refusal"):
            value = message.get(field)
            if isinstance(value, str):
                tokens += self.meter.count(value)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            tokens += sum(self.nested(call) for call in tool_calls)
        return tokens

    def content(self, content: Any) -> int:
        """A message's `content`: a string, or a list of typed parts (text, image, ...)."""
        if isinstance(content, str):
            return self.meter.count(content)
        if not isinstance(content, list):
            return 0
        tokens = 0
        for part in content:
            if isinstance(part, str):
                tokens += self.meter.count(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    tokens += self.meter.count(text)
                elif part.get("type") in _IMAGE_PART_TYPES:
                    tokens += TOKENS_PER_IMAGE
        return tokens

    def responses(self, body: Mapping[str, Any]) -> int:
        tokens = 0
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            tokens += self.meter.count(instructions)
        items = body.get("input")
        if isinstance(items, str):
            tokens += self.meter.count(items) + TOKENS_PER_MESSAGE
        elif isinstance(items, list):
            tokens += sum(self.message(item) for item in items)
        return tokens + self.nested(body.get("tools"))

    def prompt(self, prompt: Any) -> int:
        """A text prompt by the meter, a tokenized one (list of ints) exactly."""
        if isinstance(prompt, str):
            return self.meter.count(prompt)
        if isinstance(prompt, list) and all(_is_token_id(item) for item in prompt):
            self.meter.exact += len(prompt)
            return len(prompt)
        return 0

    def nested(self, value: Any) -> int:
        """Tokens of every string inside arbitrarily nested JSON, without recursion limits.

        Keys, strings and the JSON punctuation between them reach the model as text; each
        string is counted apart and a token added per string for the quotes and separators.
        """
        if value is None:  # no tools, the usual case: nothing to walk
            return 0
        tokens = 0
        pending: list[Any] = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                tokens += self.meter.count(item) + 1
            elif isinstance(item, Mapping):
                pending.extend(key for key in item if isinstance(key, str))
                pending.extend(item.values())
            elif isinstance(item, list | tuple):
                pending.extend(item)
        return tokens


def _completion_prompts(prompt: Any) -> list[Any]:
    """The separate prompts of a completions/embeddings input: one, or a batch.

    A flat list of ints is one tokenized prompt; any other list is a batch.
    """
    if isinstance(prompt, list) and not (prompt and all(_is_token_id(item) for item in prompt)):
        return prompt
    return [prompt]


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
