"""Prompt tokens as OpenAI bills them: `o200k_base` over the prompt's texts, for every model.

The fake upstream is the reference the sidecar's estimates are tested against, so it does
not reuse them: it counts the texts exactly (with the real tokenizer, as gpt-4o would) and
adds OpenAI's documented chat overhead of 3 tokens a message and 3 to prime the reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmquota.pricing.tokenizer import exact_counter

__all__ = ["prompt_tokens"]

TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3
TOKENS_PER_IMAGE = 85


def prompt_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """What the upstream reports as `prompt_tokens` (`input_tokens`) for `body`."""
    kind = endpoint.strip("/").removeprefix("v1/")
    if kind == "chat/completions":
        messages = body.get("messages")
        listed = messages if isinstance(messages, list) else []
        return (
            sum(_texts_tokens(message) + TOKENS_PER_MESSAGE for message in listed)
            + REPLY_PRIMING_TOKENS
            + _texts_tokens(body.get("tools"))
        )
    if kind in ("completions", "embeddings"):
        return _texts_tokens(body.get("prompt" if kind == "completions" else "input"))
    if kind == "responses":
        return _texts_tokens([body.get("instructions"), body.get("input"), body.get("tools")])
    return 0


def _texts_tokens(value: Any) -> int:
    """Tokens of the strings in `value` (nested JSON); token ids count one each, images 85."""
    meter = exact_counter("o200k_base")
    tokens = 0
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            tokens += meter.count(item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            tokens += 1
        elif isinstance(item, Mapping):
            if item.get("type") in ("image_url", "input_image"):
                tokens += TOKENS_PER_IMAGE
                continue
            # Roles and part types are structure, not text the model reads.
            pending.extend(value for key, value in item.items() if key not in ("role", "type"))
        elif isinstance(item, list):
            pending.extend(item)
    return tokens
