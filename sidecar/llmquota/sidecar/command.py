"""`llmquota sidecar`: flags (each also `LLMQUOTA_<FLAG>`), logging, uvloop, serving."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlsplit

from llmquota.event_loop import new_event_loop
from llmquota.sidecar.app import create_app
from llmquota.sidecar.logs import configure_logging
from llmquota.sidecar.serving import serve
from llmquota.sidecar.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    SidecarSettings,
)

__all__ = ["add_arguments", "run", "settings_from_args"]

_TRUE = {"1", "true", "yes", "on"}


def _env(flag: str, default: str | None = None) -> str | None:
    """`--upstream-key-file` reads `LLMQUOTA_UPSTREAM_KEY_FILE`."""
    return os.environ.get("LLMQUOTA_" + flag.upper().replace("-", "_"), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `llmquota sidecar`."""
    parser.description = (
        "Proxy the OpenAI-compatible API to --upstream, enforcing the budgets and rate "
        "limits of the presented ApiKey. Every flag can also be set as LLMQUOTA_<FLAG>."
    )
    parser.add_argument("--listen", default=_env("listen", "127.0.0.1:4000"), metavar="HOST:PORT")
    parser.add_argument(
        "--upstream",
        default=_env("upstream", "https://api.openai.com"),
        metavar="URL",
        help="the OpenAI-compatible API to forward to (default: %(default)s)",
    )
    parser.add_argument(
        "--upstream-key-file",
        type=Path,
        default=_env("upstream-key-file"),
        metavar="PATH",
        help="file holding the upstream's API key (a mounted Secret; re-read when it changes)",
    )
    parser.add_argument(
        "--forward-header",
        action="append",
        default=[name for name in (_env("forward-header") or "").split(",") if name.strip()],
        metavar="NAME",
        help="also forward this client header upstream (repeatable; the environment "
        "variable takes a comma-separated list); see docs/sidecar.md for those always sent",
    )
    parser.add_argument(
        "--redis",
        default=_env("redis", os.environ.get("REDIS_URL")),
        metavar="URL",
        help="the shared Redis (also REDIS_URL); without one, an embedded redis-server",
    )
    parser.add_argument(
        "--manifests",
        type=Path,
        default=_env("manifests"),
        metavar="DIR",
        help="standalone mode: Team/ApiKey/Budget/RateLimit/Secret YAML in DIR, followed live",
    )
    parser.add_argument(
        "--global-budget",
        default=_env("global-budget"),
        metavar="NS/NAME",
        help="standalone mode: a Budget every request counts against",
    )
    parser.add_argument(
        "--fail-open",
        action="store_true",
        default=(_env("fail-open", "") or "").lower() in _TRUE,
        help="admit requests without counting when the store is unreachable (default: 503)",
    )
    parser.add_argument(
        "--pricing",
        type=Path,
        default=_env("pricing"),
        metavar="FILE",
        help="per-model price overrides and the unknown-model policy (YAML)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=float(_env("lease-seconds", "30") or 30),
        help="how long a reservation outlives a sidecar that died (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(_env("max-body-bytes", str(DEFAULT_MAX_BODY_BYTES)) or 0),
        help="larger request bodies get 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=float(_env("body-timeout", "60") or 60),
        help="seconds a request body may take to arrive; slower ones get 408 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=float(_env("header-timeout", "20") or 20),
        help="seconds a connection may take to send its next request's headers (from its "
        "start or the previous response); idle or slower ones are closed (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=int(_env("max-connections", str(DEFAULT_MAX_CONNECTIONS)) or 0),
        help="client connections held at once; past it the oldest idle one is closed, or "
        "the new one gets 503 when all are busy (default: %(default)s)",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=float(_env("upstream-timeout", "600") or 600),
        help="seconds to wait for the upstream's next bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=float(_env("shutdown-timeout", "30") or 30),
        help="seconds a shutdown waits for requests in flight (default: %(default)s)",
    )
    parser.add_argument("--log-level", default=_env("log-level", "INFO"))


def settings_from_args(args: argparse.Namespace) -> SidecarSettings:
    """The settings the parsed flags describe."""
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--listen must be HOST:PORT, got {args.listen!r}")
    if urlsplit(args.upstream).username is not None or urlsplit(args.upstream).password:
        raise SystemExit(
            "--upstream must not carry user:password@; put the upstream's key in "
            "--upstream-key-file (it is sent as Authorization: Bearer)"
        )
    if args.max_connections < 1 or args.header_timeout <= 0:
        raise SystemExit("--max-connections and --header-timeout must be positive")
    if args.manifests is not None and not Path(args.manifests).is_dir():
        raise SystemExit(f"--manifests {args.manifests} is not a directory")
    return SidecarSettings(
        host=host.strip("[]"),
        port=int(port),
        upstream=args.upstream,
        upstream_key_file=None if args.upstream_key_file is None else Path(args.upstream_key_file),
        redis_url=args.redis or None,
        manifests=None if args.manifests is None else Path(args.manifests),
        global_budget=args.global_budget or None,
        fail_open=args.fail_open,
        forward_headers=frozenset(name.strip().lower() for name in args.forward_header),
        pricing=None if args.pricing is None else Path(args.pricing),
        lease_seconds=args.lease_seconds,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
        upstream_timeout=args.upstream_timeout,
        shutdown_timeout=args.shutdown_timeout,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, then drain requests in flight and free reservations."""
    configure_logging(args.log_level)
    settings = settings_from_args(args)
    serve(
        create_app(settings),
        settings,
        new_event_loop(),
        ready=lambda: print(
            f"llmquota sidecar listening on http://{settings.host}:{settings.port}", flush=True
        ),
    )
    return 0
