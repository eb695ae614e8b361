"""Fault injection: what `x-fake-fault` (or `--fault`) asks the fake upstream to break.

A spec is a comma-separated list of faults, e.g. `status:503` or
`delay:0.5,reset-mid-stream`; `none` (or an empty spec) asks for a healthy reply, so a
test can opt a single request out of a server-wide `--fault`.

- `status:CODE`       answer CODE (400-599) with OpenAI's error envelope, nothing else
- `delay:SECONDS`     wait this long before the first byte
- `reset-mid-stream`  close the connection after half the stream's events (half the
                      body when not streaming)
- `malformed-json`    a body (or one stream event) that is not valid JSON
- `no-usage`          leave usage out of the reply, streaming or not
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["FAULT_HEADER", "FaultPlan", "FaultSpecError", "parse_faults"]

FAULT_HEADER = "x-fake-fault"


class FaultSpecError(ValueError):
    """A fault spec that names an unknown fault or a bad argument."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults one request gets; the default is a healthy reply."""

    status: int | None = None
    delay_seconds: float = 0.0
    reset_mid_stream: bool = False
    malformed_json: bool = False
    no_usage: bool = False


_FLAGS = {
    "reset-mid-stream": "reset_mid_stream",
    "malformed-json": "malformed_json",
    "no-usage": "no_usage",
}


def parse_faults(spec: str) -> FaultPlan:
    """The plan a spec describes; raises `FaultSpecError` naming the bad part."""
    plan = FaultPlan()
    for raw_part in spec.split(","):
        part = raw_part.strip().lower()
        if part in {"", "none"}:
            continue
        name, _, argument = part.partition(":")
        if name == "status":
            plan = replace(plan, status=_status(argument))
        elif name == "delay":
            plan = replace(plan, delay_seconds=_seconds(argument))
        elif part in _FLAGS:
            plan = replace(plan, **{_FLAGS[part]: True})
        else:
            raise FaultSpecError(
                f"unknown fault {raw_part.strip()!r}; expected status:CODE, delay:SECONDS, "
                "reset-mid-stream, malformed-json, no-usage or none"
            )
    return plan


def _status(argument: str) -> int:
    if not argument.isdigit() or not 400 <= int(argument) <= 599:
        raise FaultSpecError(f"status:{argument} must be an HTTP error status, 400-599")
    return int(argument)


def _seconds(argument: str) -> float:
    try:
        seconds = float(argument)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise FaultSpecError(f"delay:{argument} must be a number of seconds >= 0")
    return seconds
