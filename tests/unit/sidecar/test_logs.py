"""The sidecar's JSON log lines: one object per line, whatever a request carried."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from llmquota.sidecar.logs import JsonFormatter


def _record(created: float, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "llmquota.sidecar.requests", logging.INFO, "x", 1, "request", None, None
    )
    record.created = created
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    "created",
    [
        1_764_590_400.0,
        1_764_590_400.9995,
        1_764_590_400.99999996,
        1_732_346_974.7569995,
        0.0005,
        0.0000005,
        -0.9999996,  # a clock before 1970
    ],
)
def test_the_time_is_iso_8601_to_the_millisecond_as_datetime_gives_it(created: float) -> None:
    formatter = JsonFormatter()
    for moment in (created, created + 1.25, created):  # a cached second, then another
        line = json.loads(formatter.format(_record(moment)))
        assert line["ts"] == datetime.fromtimestamp(moment, tz=UTC).isoformat(
            timespec="milliseconds"
        )


def test_fields_orjson_cannot_encode_still_make_a_line() -> None:
    line = JsonFormatter().format(
        _record(1_764_590_400.0, model="gpt-\ud800", tokens=2**70, cost_usd=0.5, team="é")
    )
    fields = json.loads(line)
    assert (fields["model"], fields["tokens"], fields["team"]) == ("gpt-\ud800", 2**70, "é")
    assert "\n" not in line
