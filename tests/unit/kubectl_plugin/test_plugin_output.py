"""The plugin's formatting: money, durations, kubectl-style tables, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmquota.kubectl_plugin.output import (
    format_document,
    format_duration,
    format_table,
    format_usd,
    iso_time,
    time_until,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("amount", "shown"),
    [(None, "-"), (0, "0"), (100, "100.00"), (0.5, "0.50"), (0.01, "0.01"),
     (0.0035, "0.0035"), (3.5e-06, "3.5e-06"), (1234.567, "1234.57")],
)  # fmt: skip
def test_usd(amount: float | None, shown: str) -> None:
    assert format_usd(amount) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(5, "5s"), (119, "119s"), (120, "2m"), (330, "5m30s"), (3599, "59m"), (10799, "179m"),
     (10800, "3h"), (4 * 3600 + 60, "4h1m"), (8 * 3600 + 60, "8h"), (47 * 3600, "47h"),
     (48 * 3600 + 3600 * 5, "2d5h"), (40 * 86400 + 3600, "40d"), (800 * 86400, "2y70d"),
     (-5, "0s")],
)  # fmt: skip
def test_duration_reads_like_kubectl_ages(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_time_until() -> None:
    assert time_until(None, NOW) == "-"
    assert time_until(NOW - timedelta(seconds=1), NOW) == "now"
    assert time_until(NOW + timedelta(hours=14, minutes=1), NOW) == "14h"


def test_iso_time_is_utc_with_a_z() -> None:
    berlin = timezone(timedelta(hours=1))
    assert iso_time(datetime(2026, 12, 1, 1, 0, tzinfo=berlin)) == "2026-12-01T00:00:00Z"
    assert iso_time(None) is None


def test_table_pads_columns_three_spaces_and_not_the_last() -> None:
    text = format_table(["NAME", "SPEND"], [["team/qa", "1.00"], ["apikey/a-long-name", "-"]])
    assert text == (
        "NAME                 SPEND\nteam/qa              1.00\napikey/a-long-name   -\n"
    )


def test_documents() -> None:
    assert format_document({"items": []}, "json") == '{\n    "items": []\n}\n'
    assert format_document({"items": [{"a": 1}]}, "yaml") == "items:\n- a: 1\n"
