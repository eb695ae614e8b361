"""`llmquota sidecar`: flags (each also `LLMQUOTA_<FLAG>`), logging, uvloop, serving."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from llmquota.event_loop import new_event_loop
from llmquota.flag_env import env, env_bool, env_float, env_int
from llmquota.manifests import check_manifest_dir, parse_global_budget_ref
from llmquota.sidecar.app import create_app
from llmquota.sidecar.logs import configure_logging
from llmquota.sidecar.serving import serve
from llmquota.sidecar.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    SidecarSettings,
)
from llmquota.sidecar.spend_snapshot import default_state_file
from llmquota.sidecar.workers import run_workers
from llmquota.store import RedisUrlError, check_redis

__all__ = ["add_arguments", "run", "settings_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `llmquota sidecar`, in groups as `--help` shows them."""
    parser.description = (
        "Proxy the OpenAI-compatible API to --upstream, enforcing the budgets and rate "
        "limits of the presented ApiKey. Every flag can also be set as LLMQUOTA_<FLAG>."
    )
    _add_listening(parser.add_argument_group("listening"))
    _add_upstream(parser.add_argument_group("upstream"))
    _add_store(parser.add_argument_group("store"))
    _add_standalone(parser.add_argument_group("standalone mode (no Kubernetes)"))
    _add_pod_identity(parser.add_argument_group("the Pod (set by the injection webhook)"))
    _add_limits(parser.add_argument_group("requests and timeouts"))
    parser.add_argument("--log-level", default=env("log-level", "INFO"))


def _add_listening(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--listen", default=env("listen", "127.0.0.1:4000"), metavar="HOST:PORT")
    group.add_argument(
        "--health-listen",
        default=env("health-listen", "0.0.0.0:4001"),
        metavar="HOST:PORT",
        help="also serve /healthz, /readyz, /metrics (only those) here, e.g. on the Pod's IP; "
        "'off': nowhere else (default: %(default)s)",
    )
    group.add_argument(
        "--max-connections",
        type=int,
        default=env_int("max-connections", DEFAULT_MAX_CONNECTIONS),
        help="client connections held at once; past it the oldest idle one is closed, or "
        "the new one gets 503 when all are busy (default: %(default)s)",
    )
    group.add_argument(
        "--shutdown-timeout",
        type=float,
        default=env_float("shutdown-timeout", 30),
        help="seconds a shutdown waits for requests in flight (default: %(default)s)",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=env_int("workers", 1),
        metavar="N",
        help="serve from N processes sharing --listen (SO_REUSEPORT), for a gateway that "
        "serves many Pods; a sidecar beside one workload keeps 1 (default: %(default)s)",
    )


def _add_upstream(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--upstream",
        default=env("upstream", "https://api.openai.com"),
        metavar="URL",
        help="the OpenAI-compatible API to forward to (default: %(default)s)",
    )
    group.add_argument(
        "--upstream-key-file",
        type=Path,
        default=env("upstream-key-file"),
        metavar="PATH",
        help="file holding the upstream's API key (a mounted Secret; re-read when it changes)",
    )
    group.add_argument(
        "--forward-header",
        action="append",
        default=[name for name in (env("forward-header") or "").split(",") if name.strip()],
        metavar="NAME",
        help="also forward this client header upstream (repeatable; the environment "
        "variable takes a comma-separated list); see docs/sidecar.md for those always sent",
    )
    group.add_argument(
        "--upstream-timeout",
        type=float,
        default=env_float("upstream-timeout", 600),
        help="seconds to wait for the upstream's next bytes (default: %(default)s)",
    )


def _add_store(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--redis",
        default=env("redis", os.environ.get("REDIS_URL")),
        metavar="URL",
        help="the shared Redis (also REDIS_URL): redis://, rediss://, unix:// or "
        "redis+sentinel://HOST:PORT,.../SERVICE[/DB]; without one, an embedded redis-server",
    )
    group.add_argument(
        "--redis-password-file",
        type=Path,
        default=env("redis-password-file"),
        metavar="PATH",
        help="file holding the Redis password (a mounted Secret; read for every new "
        "connection), so that no password is on a command line",
    )
    group.add_argument(
        "--redis-wait-replicas",
        type=int,
        default=env_int("redis-wait-replicas", 0),
        metavar="N",
        help="each settle waits until N replicas hold it (Redis WAIT), so that a failover "
        "loses no settled spend (default: %(default)s, no wait)",
    )
    group.add_argument(
        "--redis-wait-timeout",
        type=float,
        default=env_float("redis-wait-timeout", 0.1),
        metavar="SECONDS",
        help="longest wait for --redis-wait-replicas; past it the settle stands on the "
        "primary alone and a warning is logged (default: %(default)s)",
    )
    group.add_argument(
        "--fail-open",
        action="store_true",
        default=env_bool("fail-open"),
        help="admit requests without counting when the store is unreachable (default: 503)",
    )
    group.add_argument(
        "--lease-seconds",
        type=float,
        default=env_float("lease-seconds", 30),
        help="how long a reservation outlives a sidecar that died (default: %(default)s)",
    )


def _add_standalone(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--manifests",
        type=Path,
        default=env("manifests"),
        metavar="DIR",
        help="standalone mode: Team/ApiKey/Budget/RateLimit/Secret YAML in DIR, followed live",
    )
    group.add_argument(
        "--global-budget",
        default=env("global-budget"),
        metavar="NS/NAME",
        help="standalone mode: a Budget every request counts against",
    )
    group.add_argument(
        "--state-file",
        type=Path,
        default=env("state-file"),
        metavar="PATH",
        help="standalone mode: where spend and first-load times are kept, to restore a "
        "wiped store (default: a file per DIR under $XDG_STATE_HOME/llmquota, or "
        "~/.local/state/llmquota; never in DIR, which kubectl apply -f reads whole)",
    )


def _add_pod_identity(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--workload",
        default=env("workload"),
        metavar="KIND/NAME",
        help="the Pod's workload, e.g. deployment/chatbot (set by the injection webhook): "
        "keyless requests are charged to it, and metrics carry it as `workload`",
    )
    group.add_argument(
        "--identity-dir",
        type=Path,
        default=env("identity-dir"),
        metavar="DIR",
        help="the downward API volume with the Pod's `namespace` and `labels` files (set by "
        "the injection webhook); with --workload, matched against Teams' workloadSelector",
    )


def _add_limits(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--pricing",
        type=Path,
        default=env("pricing"),
        metavar="FILE",
        help="per-model price overrides and the unknown-model policy (YAML)",
    )
    group.add_argument(
        "--max-body-bytes",
        type=int,
        default=env_int("max-body-bytes", DEFAULT_MAX_BODY_BYTES),
        help="larger request bodies get 413 (default: %(default)s)",
    )
    group.add_argument(
        "--body-timeout",
        type=float,
        default=env_float("body-timeout", 60),
        help="seconds a request body may take to arrive; slower ones get 408 "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--header-timeout",
        type=float,
        default=env_float("header-timeout", 20),
        help="seconds a connection may take to send its next request's headers (from its "
        "start or the previous response); idle or slower ones are closed (default: %(default)s)",
    )


def settings_from_args(args: argparse.Namespace) -> SidecarSettings:
    """The settings the parsed flags describe; SystemExit with one line on a bad one."""
    host, port = _host_port(args.listen, "--listen must be HOST:PORT")
    _check_upstream(args.upstream)
    if args.max_connections < 1 or args.header_timeout <= 0 or args.workers < 1:
        raise SystemExit("--max-connections, --header-timeout and --workers must be positive")
    health_listen = None
    if args.health_listen not in {"", "off"}:
        health_listen = _host_port(args.health_listen, "--health-listen must be HOST:PORT or off")
    if args.manifests is not None and not Path(args.manifests).is_dir():
        raise SystemExit(f"--manifests {args.manifests} is not a directory")
    state_file = args.state_file
    if state_file is None and args.manifests is not None:
        state_file = default_state_file(Path(args.manifests))
    password_file = None if args.redis_password_file is None else Path(args.redis_password_file)
    _check_store(args, password_file)
    return SidecarSettings(
        host=host,
        port=port,
        health_listen=health_listen,
        upstream=args.upstream,
        upstream_key_file=None if args.upstream_key_file is None else Path(args.upstream_key_file),
        redis_url=args.redis or None,
        redis_password_file=password_file,
        redis_wait_replicas=args.redis_wait_replicas,
        redis_wait_timeout=args.redis_wait_timeout,
        manifests=None if args.manifests is None else Path(args.manifests),
        identity_dir=None if args.identity_dir is None else Path(args.identity_dir),
        workload=args.workload or None,
        global_budget=args.global_budget or None,
        state_file=None if state_file is None else Path(state_file),
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


def _host_port(value: str, expected: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets or not) as host and port."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"{expected}, got {value!r}")
    return host.strip("[]"), int(port)


def _check_upstream(upstream: str) -> None:
    """The upstream's key goes in a file, never in its URL (which is logged)."""
    if urlsplit(upstream).username is not None or urlsplit(upstream).password:
        raise SystemExit(
            "--upstream must not carry user:password@; put the upstream's key in "
            "--upstream-key-file (it is sent as Authorization: Bearer)"
        )


def _check_store(args: argparse.Namespace, password_file: Path | None) -> None:
    """--redis-wait-* in range, and --redis of a form the store supports."""
    if args.redis_wait_replicas < 0 or args.redis_wait_timeout <= 0:
        raise SystemExit("--redis-wait-replicas must be >= 0 and --redis-wait-timeout > 0")
    if args.redis:
        try:
            check_redis(args.redis, password_file)
        except RedisUrlError as error:
            raise SystemExit(f"llmquota sidecar: {error}") from None


def _refuse(problem: object) -> int:
    """A configuration error: one line, no traceback, exit status 2."""
    print(f"llmquota sidecar: {problem}", file=sys.stderr, flush=True)
    return 2


def _manifest_problems(settings: SidecarSettings) -> list[str]:
    """What `llmquota check` would print for --manifests (and --global-budget)."""
    if settings.manifests is None:
        return []
    global_budget = parse_global_budget_ref(settings.global_budget)
    problems = check_manifest_dir(settings.manifests, global_budget).problems
    return [f"--manifests {settings.manifests}: {problem}" for problem in problems]


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, then drain requests in flight and free reservations.

    Refuses to start, one line per problem and no traceback, on a configuration error:
    a bad flag, pricing file or store URL, or any problem in --manifests.
    """
    configure_logging(args.log_level)
    try:
        settings = settings_from_args(args)
        problems = _manifest_problems(settings)
        if problems:
            for problem in problems[:-1]:
                _refuse(problem)
            return _refuse(problems[-1])
        app = create_app(settings)
    except ValueError as error:  # PricingFileError, a bad --global-budget, ...
        return _refuse(error)
    if args.workers > 1:
        return run_workers(settings, args.workers, _serve_worker)
    _serve(app, settings, "")
    return 0


def _serve_worker(settings: SidecarSettings) -> int:
    """One of `--workers`: an app of its own, in the forked process."""
    _serve(create_app(settings), settings, f" (worker {os.getpid()})")
    return 0


def _serve(app: web.Application, settings: SidecarSettings, who: str) -> None:
    serve(
        app,
        settings,
        new_event_loop(),
        ready=lambda: print(
            f"llmquota sidecar listening on http://{settings.host}:{settings.port}{who}",
            flush=True,
        ),
    )
