"""Reading a server-sent event stream as it passes through: usage, text, hidden chunks.

The sidecar forwards each event as soon as it is complete, never the whole stream at
once. On the way it picks up the usage the upstream reports at the end (chat and
completions: a chunk with `usage` and no choices; Responses: `response.completed`),
counts the generated text in tokens (the model's tokenizer, else UTF-8 bytes: never
fewer than were generated), to charge a stream cut off before usage came and to stop one
that runs past its reservation, and drops
the usage-only chunk when it was the sidecar, not the client, that asked for it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from llmquota.pricing.tokenizer import TextMeter
from llmquota.sidecar.wire import Usage, usage_of

__all__ = ["EventTooLongError", "StreamMeter", "stream_error_event"]

_EVENT_END = b"\n\n"
_TERMINAL_RESPONSE_EVENTS = ("response.completed", "response.incomplete", "response.failed")


class EventTooLongError(ValueError):
    """The upstream sent more than the limit without ending an event."""


def stream_error_event(message: str) -> bytes:
    """An SSE event with OpenAI's error envelope, as a stream that fails ends."""
    envelope = {"error": {"message": message, "type": "upstream_error", "param": None,
                          "code": "upstream_event_too_long"}}  # fmt: skip
    return b"data: " + json.dumps(envelope).encode() + _EVENT_END


class StreamMeter:
    """Splits a byte stream into events, reads them, and says which bytes to forward."""

    def __init__(
        self,
        *,
        hide_usage_chunk: bool,
        tokens: TextMeter | None = None,
        max_event_bytes: int = 1024 * 1024,
    ) -> None:
        """`hide_usage_chunk`: drop the usage-only chunk (the client did not ask for it);
        `tokens` counts the generated text (default: its UTF-8 bytes); `max_event_bytes`:
        the most held of one event before it is an error."""
        self.hide_usage_chunk = hide_usage_chunk
        self.max_event_bytes = max_event_bytes
        self.usage: Usage | None = None
        self.text_chars = 0
        self.completion_tokens_streamed = 0
        self._tokens = tokens or TextMeter(None)
        self._pending = b""

    def _streamed(self, text: Any) -> None:
        """Count one generated text (anything else, or an empty one, counts nothing)."""
        if isinstance(text, str) and text:
            self.text_chars += len(text)
            self.completion_tokens_streamed += self._tokens.count(text)

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the upstream; return the complete events to pass on."""
        buffer = self._pending + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(_EVENT_END)
        if end < 0:
            if len(buffer) > self.max_event_bytes:
                self._pending = b""
                msg = f"the upstream sent an event longer than {self.max_event_bytes} bytes"
                raise EventTooLongError(msg)
            self._pending = buffer
            return b""
        complete, self._pending = buffer[: end + 2], buffer[end + 2 :]
        events = complete.split(_EVENT_END)[:-1]
        kept = [event for event in events if self._read(event)]
        if len(kept) == len(events):  # the usual case: nothing hidden, pass the bytes on
            return complete
        return b"".join(event + _EVENT_END for event in kept)

    def flush(self) -> bytes:
        """The bytes left when the stream ended without a final blank line."""
        rest, self._pending = self._pending, b""
        if rest.strip() and self._read(rest.rstrip(b"\n")):
            return rest
        return b""

    def _read(self, event: bytes) -> bool:
        """Learn from one event; False when it is to be hidden from the client."""
        data = _data_of(event)
        if data is None or data == b"[DONE]":
            return True
        try:
            payload = _event_json(data)
        except (ValueError, RecursionError):
            return True
        if not isinstance(payload, dict):
            return True
        return self._read_payload(payload)

    # Parsed JSON holds dicts and lists only, so `isinstance(..., dict)` (a C check) stands
    # for Mapping here; every event passes through these.
    def _read_payload(self, payload: dict[str, Any]) -> bool:
        event_type = payload.get("type")
        if isinstance(event_type, str):  # the Responses API names its events
            if event_type == "response.output_text.delta":
                self._streamed(payload.get("delta"))
            elif event_type in _TERMINAL_RESPONSE_EVENTS:
                response = payload.get("response")
                if isinstance(response, dict):
                    self.usage = usage_of(response.get("usage")) or self.usage
            return True
        choices = payload.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._read_choice(choice)
        usage = usage_of(payload.get("usage"))
        if usage is None:
            return True
        self.usage = usage
        return not (self.hide_usage_chunk and not choices)

    def _read_choice(self, choice: dict[str, Any]) -> None:
        """Count the generated texts of one chat or completions choice of a chunk."""
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            self._streamed(choice.get("text"))
            return
        self._streamed(delta.get("content"))
        self._streamed(delta.get("refusal"))
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    self._streamed(function.get("arguments"))
                    self._streamed(function.get("name"))


def _event_json(data: bytes) -> Any:
    """An event's JSON: orjson, the standard library for what orjson refuses. Unlike a
    request body, what orjson reads otherwise (an integer past 64 bits as a float, as a
    token count) changes nothing here: such a count is refused as absurd either way."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _data_of(event: bytes) -> bytes | None:
    """The `data:` of one event (several data lines joined by newlines)."""
    if event.startswith(b"data: ") and b"\n" not in event:  # one line, as APIs send them
        return event[6:]
    lines = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None
