"""The event loop llmquota's servers run on: uvloop when installed, asyncio's otherwise.

uvloop roughly halves the event loop's own cost per request on the proxy path; it is a
dependency everywhere but Windows, where asyncio's loop serves.
"""

from __future__ import annotations

import asyncio

__all__ = ["new_event_loop"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop, or asyncio's when uvloop is not installed."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
