"""Structured logs: one JSON object per line, with the request id when there is one.

Keys never reach a log line: handlers log the ApiKey's name and the request id only.

Every request logs a line, and on the hot path a write per line is a syscall that wakes
whatever reads the log (the container runtime's pipe). Lines are therefore batched and
written at most every `FLUSH_INTERVAL_S` (or when the batch is large); warnings and
errors are written at once. A request's line skips the logging module's record (its
caller lookup, its two dozen attributes, the handler chain) when all logging would do
with the record is hand it to that handler and formatter: `LineLogger`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

__all__ = ["BatchedStreamHandler", "JsonFormatter", "LineLogger", "configure_logging"]

FLUSH_INTERVAL_S = 0.25
FLUSH_BYTES = 64 * 1024

# Attributes every LogRecord has; anything else was passed in `extra=` and is logged.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)

# A timestamp's text after the second, by millisecond.
_MILLISECONDS = tuple(f".{ms:03d}+00:00" for ms in range(1000))


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, extra fields."""

    def __init__(self) -> None:
        super().__init__()
        # The time's text up to the second, for the second last formatted: every request
        # logs a line, and a datetime per line costs more than the rest of the line.
        self._second: int | None = None
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        """`created` as ISO 8601 in UTC, to the millisecond (as `datetime.isoformat`)."""
        second = int(created)
        micros = round((created - second) * 1e6)  # rounded as datetime rounds it
        if not 0 <= micros < 1_000_000:  # rounded up to the next second, or before 1970
            carry, micros = divmod(micros, 1_000_000)
            second += carry
        if second != self._second:
            moment = datetime.fromtimestamp(second, tz=UTC)
            self._second, self._second_text = second, moment.strftime("%Y-%m-%dT%H:%M:%S")
        return self._second_text + _MILLISECONDS[micros // 1000]

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        fields = {
            name: value
            for name, value in vars(record).items()
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_")
        }
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields)

    def line(
        self,
        created: float,
        level_name: str,
        logger_name: str,
        message: str,
        fields: Mapping[str, Any],
    ) -> str:
        """The JSON line of a record with these attributes and `extra=` fields."""
        entry: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": level_name.lower(),
            "logger": logger_name,
            "msg": message,
        }
        entry.update(fields)
        try:
            # orjson: a few microseconds less per line, and every request logs one.
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson cannot encode (an integer past 64 bits)
            return json.dumps(entry, default=str, separators=(",", ":"))


class BatchedStreamHandler(logging.Handler):
    """Writes formatted lines to a stream in batches: one write per interval, not per line."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._lines: list[str] = []
        self._size = 0
        self._flush_scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the line; write now for warnings and errors or when no loop can flush."""
        try:
            line = self.format(record)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)
            return
        self.queue(line, record.levelno)

    def queue(self, line: str, level: int) -> None:
        """Queue a formatted line of a record of `level`, as `emit` does."""
        self._lines.append(line)
        self._size += len(line)
        if level >= logging.WARNING or self._size >= FLUSH_BYTES:
            self.flush()
            return
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            loop.call_later(FLUSH_INTERVAL_S, self.flush)
            self._flush_scheduled = True

    def flush(self) -> None:
        """Write what is queued in one go."""
        self._flush_scheduled = False
        if not self._lines:
            return
        batch, self._lines, self._size = self._lines, [], 0
        try:
            self.stream.write("\n".join(batch) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.handleError(logging.makeLogRecord({"msg": "log batch lost"}))

    def close(self) -> None:
        """Write what is left before closing."""
        self.flush()
        super().close()


class LineLogger:
    """A logger's INFO records with fields, as `logger.info(message, extra=fields)` logs
    them, for a line per request.

    When the record would reach exactly one handler, a `BatchedStreamHandler` with a
    `JsonFormatter`, and no filter or record factory could change or drop it on the
    way, the line is formatted and queued directly: the same bytes, without building
    the record. Anything else (another handler, a filter, pytest's capture) gets the
    record from the logging module as usual. Looked up per line, so a change to the
    logging configuration applies from the next line on.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def enabled(self) -> bool:
        """Whether INFO records of the logger are logged at all."""
        return self.logger.isEnabledFor(logging.INFO)

    def info(self, message: str, fields: Mapping[str, Any]) -> None:
        """Log `message` at INFO with `fields` as its `extra=`."""
        direct = self._direct_line(message, fields)
        if direct is None:
            self.logger.info(message, extra=fields)
            return
        handler, line = direct
        handler.acquire()
        try:
            handler.queue(line, logging.INFO)
        finally:
            handler.release()

    def _direct_line(
        self, message: str, fields: Mapping[str, Any]
    ) -> tuple[BatchedStreamHandler, str] | None:
        """The one handler the record would reach unchanged and its line, if that is all
        logging would do with it; None when the logging module must handle the record
        (a line that fails to format too: logging reports that error its own way)."""
        logger = self.logger
        if (
            not logger.isEnabledFor(logging.INFO)
            or logger.filters
            or logging.getLogRecordFactory() is not logging.LogRecord
        ):
            return None
        found: logging.Handler | None = None
        current: logging.Logger | None = logger
        while current is not None:
            for handler in current.handlers:
                if found is not None:
                    return None
                found = handler
            current = current.parent if current.propagate else None
        if type(found) is not BatchedStreamHandler or found.filters or found.level > logging.INFO:
            return None
        formatter = found.formatter
        if type(formatter) is not JsonFormatter:
            return None
        try:
            line = formatter.line(
                time.time(), logging.getLevelName(logging.INFO), logger.name, message, fields
            )
        except Exception:  # logging formats it again and reports the error its own way
            return None
        return found, line


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines, batched."""
    # The pid, thread and process names are not logged; skip looking them up per record.
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = BatchedStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
