"""Every proxied request logs one JSON line: its bytes, and who else sees the record.

The line is what log pipelines parse, so its fields, their order and their encoding are
pinned here byte for byte, served and refused. Whatever logging is configured to do
with the request logger's records (a filter, a second handler, a handler's level or
formatter) happens to them as it would to any record.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from llmquota.policy.limits import ResolvedPolicy
from llmquota.pricing.config_file import load_price_table
from llmquota.sidecar.exchange import Exchange, Refusal
from llmquota.sidecar.logs import BatchedStreamHandler, JsonFormatter
from llmquota.sidecar.metrics import SidecarMetrics
from llmquota.sidecar.recording import recorded
from llmquota.sidecar.state import METRICS
from llmquota.sidecar.wire import Usage

# 2025-12-01T12:00:00.250 UTC, and a request that took 1.5 ms, 1.25 ms of it upstream.
NOW_S = 1_764_590_400.25
STARTED_S, FINISHED_S = 100.0, 100.0015

SERVED = (
    '{"ts":"2025-12-01T12:00:00.250+00:00","level":"info",'
    '"logger":"llmquota.sidecar.requests","msg":"request",'
    '"request_id":"REQUEST_ID","method":"POST","path":"/v1/chat/completions",'
    '"status":200,"outcome":"served","namespace":"ns","team":"qa","key":"bot",'
    '"model":"gpt-4o-mini","cost_usd":0.0000123,"prompt_tokens":12,'
    '"completion_tokens":16,"duration_ms":1.5,"upstream_ms":1.25}'
)
REFUSED = (
    '{"ts":"2025-12-01T12:00:00.250+00:00","level":"info",'
    '"logger":"llmquota.sidecar.requests","msg":"request",'
    '"request_id":"REQUEST_ID","method":"POST","path":"/v1/chat/completions",'
    '"status":429,"outcome":"rate_limited","namespace":"","team":"","key":"",'
    '"model":"gpt-\\ud800","cost_usd":0.0,"prompt_tokens":0,'
    '"completion_tokens":0,"duration_ms":1.5,"upstream_ms":0.0}'
)
POLICY = ResolvedPolicy(
    key_hash="h", namespace="ns", key_name="bot", team="qa", models=["gpt-4o-mini"]
)


@dataclass
class Logged:
    """The request logger as the sidecar's `configure_logging` sets it up, on a buffer,
    and the records the logging module made for it."""

    logger: logging.Logger
    handler: BatchedStreamHandler
    stream: io.StringIO
    records: list[logging.LogRecord]
    others: list[logging.Handler] = field(default_factory=list)  # handlers a test adds

    def only_these_handlers(self) -> None:
        """Take off the handlers pytest adds to every non-propagating logger per test."""
        self.logger.handlers[:] = [*self.others, self.handler]

    def lines(self) -> list[str]:
        self.handler.flush()
        return self.stream.getvalue().splitlines()


class _Keeping(logging.Handler):
    """A handler that keeps the records it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logged]:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("llmquota.sidecar.requests")
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "filters", [])
    records: list[logging.LogRecord] = []
    make_record = logger.makeRecord

    def recorded_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        records.append(make_record(*args, **kwargs))
        return records[-1]

    monkeypatch.setattr(logger, "makeRecord", recorded_record)
    level = logger.level
    logger.setLevel(logging.INFO)
    clock = iter([STARTED_S, FINISHED_S])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(time, "time", lambda: NOW_S)
    yield Logged(logger, handler, stream, records)
    logger.setLevel(level)


async def _served(_: web.Request, exchange: Exchange) -> web.StreamResponse:
    exchange.policy, exchange.model = POLICY, "gpt-4o-mini"
    exchange.upstream_s = 0.00125
    exchange.usage, exchange.cost_usd = Usage(12, 16), 0.0000123
    return web.Response()


async def _refused(_: web.Request, exchange: Exchange) -> web.StreamResponse:
    exchange.model = "gpt-\ud800"  # a name a client sent that is not valid UTF-8
    raise Refusal(429, "slow down", "rate_limit_error", "rate_limited", outcome="rate_limited")


async def _handle(handler: object, logged: Logged) -> str:
    """The request id in the answer's header (refusals only), after `handler` ran as the
    sidecar runs it."""
    logged.only_these_handlers()
    app = web.Application()
    app[METRICS] = SidecarMetrics.create(load_price_table(None))
    request = make_mocked_request("POST", "/v1/chat/completions", app=app)
    response = await recorded(handler)(request)  # type: ignore[arg-type]
    return response.headers.get("x-request-id", "")


def _with_any_id(lines: list[str]) -> list[str]:
    """The lines with their request id (a random prefix and a counter) as REQUEST_ID."""
    return [
        re.sub(r'"request_id":"[0-9a-f]{32}"', '"request_id":"REQUEST_ID"', line) for line in lines
    ]


async def test_a_served_request_logs_this_line(logged: Logged) -> None:
    await _handle(_served, logged)
    assert _with_any_id(logged.lines()) == [SERVED]


async def test_the_line_is_written_without_a_log_record(logged: Logged) -> None:
    await _handle(_served, logged)
    assert len(logged.lines()) == 1
    assert logged.records == []


async def test_a_refused_request_logs_this_line(logged: Logged) -> None:
    request_id = await _handle(_refused, logged)
    assert logged.lines() == [REFUSED.replace("REQUEST_ID", request_id)]


async def test_a_filter_on_the_request_logger_still_drops_lines(logged: Logged) -> None:
    logged.logger.addFilter(lambda record: record.getMessage() != "request")
    await _handle(_served, logged)
    assert logged.lines() == []


async def test_a_disabled_request_logger_writes_no_line(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logged.logger, "disabled", True)  # as logging.config leaves it
    await _handle(_served, logged)
    assert logged.lines() == []


async def test_a_filter_on_the_handler_still_drops_lines(logged: Logged) -> None:
    logged.handler.addFilter(lambda record: record.getMessage() != "request")
    await _handle(_served, logged)
    assert logged.lines() == []


async def test_a_handler_above_info_writes_no_request_line(logged: Logged) -> None:
    logged.handler.setLevel(logging.WARNING)
    await _handle(_served, logged)
    assert logged.lines() == []


async def test_another_formatter_formats_the_request_line(logged: Logged) -> None:
    logged.handler.setFormatter(logging.Formatter("%(name)s %(message)s %(outcome)s"))
    await _handle(_served, logged)
    assert logged.lines() == ["llmquota.sidecar.requests request served"]


async def test_a_second_handler_gets_the_record_with_its_fields(logged: Logged) -> None:
    second = _Keeping()
    logged.others.append(second)
    await _handle(_served, logged)
    assert _with_any_id(logged.lines()) == [SERVED]
    (record,) = second.records
    assert (record.getMessage(), vars(record)["outcome"]) == ("request", "served")


async def test_a_handler_on_a_parent_logger_gets_the_record(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = _Keeping()
    monkeypatch.setattr(logging.getLogger("llmquota.sidecar"), "handlers", [parent])
    monkeypatch.setattr(logged.logger, "propagate", True)
    await _handle(_served, logged)
    assert _with_any_id(logged.lines()) == [SERVED]
    assert [record.getMessage() for record in parent.records] == ["request"]


async def test_a_record_factory_still_makes_the_record(logged: Logged) -> None:
    factory = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.pod = "chatbot-0"
        return record

    logging.setLogRecordFactory(tagged)
    try:
        await _handle(_served, logged)
    finally:
        logging.setLogRecordFactory(factory)
    assert _with_any_id(logged.lines()) == [
        SERVED.replace('"msg":"request",', '"msg":"request","pod":"chatbot-0",')
    ]
