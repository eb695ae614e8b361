"""`llmquota operator`: flags (each also LLMQUOTA_<FLAG>) -> OperatorConfig -> kopf."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
from pathlib import Path

from llmquota.operator.config import OperatorConfig, SidecarConfig, parse_host_port
from llmquota.operator.handlers import build_registry
from llmquota.operator.lifecycle import serve
from llmquota.store import check_redis

__all__ = ["add_arguments", "config_from_args", "run"]


def _env(flag: str, default: str | None = None) -> str | None:
    return os.environ.get("LLMQUOTA_" + flag.upper().replace("-", "_"), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The operator's flags; every default can also come from LLMQUOTA_<FLAG>."""
    add = parser.add_argument
    add(
        "--redis",
        default=_env("redis", os.environ.get("REDIS_URL")),
        metavar="URL",
        help="Redis URL (also REDIS_URL), e.g. redis://redis:6379/0 or "
        "redis+sentinel://HOST:PORT,.../SERVICE[/DB]",
    )
    add(
        "--redis-password-file",
        type=Path,
        default=_env("redis-password-file"),
        metavar="PATH",
        help="file holding the Redis password (a mounted Secret), so that none is on a "
        "command line",
    )
    add(
        "--global-budget",
        default=_env("global-budget"),
        metavar="NS/NAME",
        help="a Budget every request counts against",
    )
    add(
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help="watch this namespace (repeatable; LLMQUOTA_NAMESPACE is comma-separated); "
        "none: the whole cluster",
    )
    add(
        "--health-listen",
        default=_env("health-listen", "0.0.0.0:8080"),
        metavar="HOST:PORT",
        help="/healthz and /metrics (default 0.0.0.0:8080)",
    )
    add(
        "--webhook-listen",
        default=_env("webhook-listen", "0.0.0.0:9443"),
        metavar="HOST:PORT",
        help="sidecar-injection webhook (default 0.0.0.0:9443)",
    )
    add(
        "--webhook-cert-dir",
        default=_env("webhook-cert-dir"),
        metavar="DIR",
        help="directory with tls.crt and tls.key; absent: no webhook server",
    )
    add(
        "--sidecar-image",
        default=_env("sidecar-image"),
        metavar="IMAGE",
        help="image of the injected sidecar",
    )
    add(
        "--sidecar-config-map",
        default=_env("sidecar-config-map"),
        metavar="NAME",
        help="ConfigMap (pricing.yaml, fail-open, resources.yaml) mounted into the sidecar",
    )
    add(
        "--config-namespace",
        default=_env("config-namespace", os.environ.get("POD_NAMESPACE")),
        metavar="NS",
        help="namespace of --sidecar-config-map, --upstream-secret and --sidecar-redis-secret, "
        "mirrored from there into the namespaces of injected Pods (default: $POD_NAMESPACE)",
    )
    add(
        "--upstream",
        default=_env("upstream"),
        metavar="URL",
        help="upstream the sidecar proxies to, e.g. https://api.openai.com",
    )
    add(
        "--upstream-secret",
        default=_env("upstream-secret"),
        metavar="NAME:KEY",
        help="Secret and key with the upstream's credential",
    )
    add(
        "--sidecar-redis-secret",
        default=_env("sidecar-redis-secret"),
        metavar="NAME:KEY",
        help="Secret and key (default url) with the Redis URL for injected sidecars, which get "
        "it as an environment variable from the Secret; absent: --redis, as a plain value",
    )
    add(
        "--fail-open",
        action="store_true",
        default=(_env("fail-open", "") or "").lower() in {"1", "true", "yes"},
        help="injected sidecars admit requests when Redis is unreachable",
    )
    add(
        "--status-interval",
        type=float,
        default=float(_env("status-interval", "5") or 5),
        metavar="SECONDS",
        help="how often statuses are synced from Redis (default 5)",
    )
    add(
        "--orphan-interval",
        type=float,
        default=float(_env("orphan-interval", "60") or 60),
        metavar="SECONDS",
        help="how often policies that no ApiKey owns are withdrawn; also at start (default 60)",
    )
    add(
        "--forecast-span",
        type=float,
        default=float(_env("forecast-span", "3600") or 3600),
        metavar="SECONDS",
        help="recent spend the forecast's burn rate is measured over (default 3600)",
    )
    add(
        "--peering",
        default=_env("peering"),
        metavar="NAME",
        help="kopf peering object, so replicas take turns; absent: standalone",
    )


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    """Validate the flags into an OperatorConfig; ValueError names the bad flag."""
    if not args.redis:
        msg = "--redis (or REDIS_URL) is required"
        raise ValueError(msg)
    password_file = None if args.redis_password_file is None else Path(args.redis_password_file)
    check_redis(args.redis, password_file)  # RedisUrlError is a ValueError
    global_budget = None
    if args.global_budget:
        namespace, sep, name = args.global_budget.partition("/")
        if not sep or not namespace or not name:
            msg = f"--global-budget {args.global_budget!r} is not NAMESPACE/NAME"
            raise ValueError(msg)
        global_budget = (namespace, name)
    namespaces = args.namespace or [
        ns for ns in (_env("namespace", "") or "").split(",") if ns.strip()
    ]
    secret_name, secret_key = None, "api-key"
    if args.upstream_secret:
        secret_name, _, key = args.upstream_secret.partition(":")
        secret_key = key or secret_key
    redis_secret, _, redis_key = (args.sidecar_redis_secret or "").partition(":")
    sidecar = None
    if args.sidecar_image:
        sidecar = SidecarConfig(
            image=args.sidecar_image,
            redis_url=args.redis,
            redis_secret=redis_secret or None,
            redis_secret_key=redis_key or "url",
            upstream=args.upstream,
            upstream_secret=secret_name,
            upstream_secret_key=secret_key,
            pricing_config_map=args.sidecar_config_map,
            fail_open=args.fail_open,
        )
    return OperatorConfig(
        redis_url=args.redis,
        redis_password_file=password_file,
        global_budget=global_budget,
        namespaces=tuple(ns.strip() for ns in namespaces),
        health_listen=parse_host_port(args.health_listen),
        webhook_listen=parse_host_port(args.webhook_listen),
        webhook_cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
        sidecar=sidecar,
        status_interval=args.status_interval,
        orphan_interval=args.orphan_interval,
        forecast_span=args.forecast_span,
        peering=args.peering,
        config_namespace=args.config_namespace or None,
    )


def run(args: argparse.Namespace) -> int:
    """`llmquota operator`."""
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"llmquota operator: {error}")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # kopf logs every handler and timer run at INFO: thousands of lines a second with
    # thousands of objects. Problems (WARNING and up) still show, and become Events.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # `kill -USR1 <pid>` prints every thread's stack: a stuck operator can be inspected.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    asyncio.run(serve(config, build_registry(config)))
    return 0
