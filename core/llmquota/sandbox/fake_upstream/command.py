"""`llmquota fake-upstream`: serve the fake OpenAI-compatible API from the command line."""

from __future__ import annotations

import argparse

from aiohttp import web

from llmquota.event_loop import new_event_loop
from llmquota.sandbox.fake_upstream.app import create_app
from llmquota.sandbox.fake_upstream.faults import FAULT_HEADER, FaultSpecError, parse_faults
from llmquota.sandbox.fake_upstream.settings import DEFAULT_MODELS, FakeUpstreamSettings

__all__ = ["add_arguments", "run", "settings_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `llmquota fake-upstream`."""
    parser.description = (
        "A fast fake of OpenAI's API for tests, demos and benchmarks. "
        f"Per-request faults via the `{FAULT_HEADER}` header; recorded requests at "
        "GET/DELETE /_fake/requests."
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:9000", metavar="HOST:PORT", help="%(default)s"
    )
    parser.add_argument(
        "--latency-ms", type=_non_negative_float, default=0.0, help="time to first byte"
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=_non_negative_float,
        default=0.0,
        help="pause between stream events",
    )
    parser.add_argument(
        "--completion-tokens",
        type=_non_negative_int,
        default=16,
        help="tokens every reply generates, or the request's max tokens if smaller",
    )
    parser.add_argument(
        "--prompt-tokens",
        type=_non_negative_int,
        default=None,
        help="report this many prompt tokens instead of estimating them from the request",
    )
    parser.add_argument("--chunks", type=_positive_int, default=4, help="content events per stream")
    parser.add_argument("--embedding-dimensions", type=_positive_int, default=16)
    parser.add_argument(
        "--require-key",
        metavar="KEY",
        default=None,
        help="answer 401 unless the request sends `Authorization: Bearer KEY`",
    )
    parser.add_argument(
        "--fault",
        type=_fault_spec,
        default="",
        help="faults for every request without the header: status:CODE, delay:SECONDS, "
        "reset-mid-stream, malformed-json, no-usage (comma-separated)",
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated models for GET /v1/models",
    )


def settings_from_args(args: argparse.Namespace) -> FakeUpstreamSettings:
    """The settings the parsed flags describe."""
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--listen must be HOST:PORT, got {args.listen!r}")
    return FakeUpstreamSettings(
        host=host.strip("[]"),
        port=int(port),
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        completion_tokens=args.completion_tokens,
        prompt_tokens=args.prompt_tokens,
        chunks=args.chunks,
        embedding_dimensions=args.embedding_dimensions,
        require_key=args.require_key,
        fault=parse_faults(args.fault),
        models=tuple(model.strip() for model in args.models.split(",") if model.strip()),
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; uvloop when installed, no access log (it costs throughput)."""
    settings = settings_from_args(args)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        loop=new_event_loop(),
        print=lambda _: print(
            f"fake upstream listening on http://{settings.host}:{settings.port}", flush=True
        ),
    )
    return 0


def _fault_spec(value: str) -> str:
    try:
        parse_faults(value)
    except FaultSpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number
