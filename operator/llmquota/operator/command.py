"""`llmquota operator`: flags (each also LLMQUOTA_<FLAG>) -> OperatorConfig -> kopf."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
from pathlib import Path

from llmquota.flag_env import env, env_bool, env_float
from llmquota.operator.config import OperatorConfig, SidecarConfig, parse_host_port
from llmquota.operator.handlers import build_registry
from llmquota.operator.lifecycle import serve
from llmquota.store import check_redis

__all__ = ["add_arguments", "config_from_args", "run"]


Group = argparse._ArgumentGroup  # argparse has no public name for this type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The operator's flags, in groups; every default can also come from LLMQUOTA_<FLAG>."""
    _add_redis_flags(parser.add_argument_group("Redis"))
    _add_scope_flags(parser.add_argument_group("what the operator watches and enforces"))
    _add_listen_flags(parser.add_argument_group("listeners"))
    _add_sidecar_flags(parser.add_argument_group("the injected sidecar"))
    _add_interval_flags(parser.add_argument_group("intervals"))


def _add_redis_flags(group: Group) -> None:
    group.add_argument(
        "--redis",
        default=env("redis", os.environ.get("REDIS_URL")),
        metavar="URL",
        help="Redis URL (also REDIS_URL), e.g. redis://redis:6379/0 or "
        "redis+sentinel://HOST:PORT,.../SERVICE[/DB]",
    )
    group.add_argument(
        "--redis-password-file",
        type=Path,
        default=env("redis-password-file"),
        metavar="PATH",
        help="file holding the Redis password (a mounted Secret), so that none is on a "
        "command line",
    )


def _add_scope_flags(group: Group) -> None:
    group.add_argument(
        "--global-budget",
        default=env("global-budget"),
        metavar="NS/NAME",
        help="a Budget every request counts against",
    )
    group.add_argument(
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help="watch this namespace (repeatable; LLMQUOTA_NAMESPACE is comma-separated); "
        "none: the whole cluster",
    )
    group.add_argument(
        "--peering",
        default=env("peering"),
        metavar="NAME",
        help="kopf peering object, so replicas take turns; absent: standalone",
    )


def _add_listen_flags(group: Group) -> None:
    group.add_argument(
        "--health-listen",
        default=env("health-listen", "0.0.0.0:8080"),
        metavar="HOST:PORT",
        help="/healthz and /metrics (default 0.0.0.0:8080)",
    )
    group.add_argument(
        "--webhook-listen",
        default=env("webhook-listen", "0.0.0.0:9443"),
        metavar="HOST:PORT",
        help="sidecar-injection webhook (default 0.0.0.0:9443)",
    )
    group.add_argument(
        "--webhook-cert-dir",
        default=env("webhook-cert-dir"),
        metavar="DIR",
        help="directory with tls.crt and tls.key; absent: no webhook server",
    )


def _add_sidecar_flags(group: Group) -> None:
    group.add_argument(
        "--sidecar-image",
        default=env("sidecar-image"),
        metavar="IMAGE",
        help="image of the injected sidecar",
    )
    group.add_argument(
        "--sidecar-config-map",
        default=env("sidecar-config-map"),
        metavar="NAME",
        help="ConfigMap (pricing.yaml, fail-open, resources.yaml) mounted into the sidecar",
    )
    group.add_argument(
        "--config-namespace",
        default=env("config-namespace", os.environ.get("POD_NAMESPACE")),
        metavar="NS",
        help="namespace of --sidecar-config-map, --upstream-secret, --sidecar-redis-secret and "
        "--sidecar-redis-password-secret, "
        "mirrored from there into the namespaces of injected Pods (default: $POD_NAMESPACE)",
    )
    group.add_argument(
        "--upstream",
        default=env("upstream"),
        metavar="URL",
        help="upstream the sidecar proxies to, e.g. https://api.openai.com",
    )
    group.add_argument(
        "--upstream-secret",
        default=env("upstream-secret"),
        metavar="NAME:KEY",
        help="Secret and key with the upstream's credential",
    )
    group.add_argument(
        "--sidecar-redis-secret",
        default=env("sidecar-redis-secret"),
        metavar="NAME:KEY",
        help="Secret and key (default url) with the Redis URL for injected sidecars, which get "
        "it as an environment variable from the Secret; absent: --redis, as a plain value",
    )
    group.add_argument(
        "--sidecar-redis-password-secret",
        default=env("sidecar-redis-password-secret"),
        metavar="NAME:KEY",
        help="Secret and key (default password) with the Redis password, mounted into injected "
        "sidecars as --redis-password-file (mirrored like --sidecar-redis-secret)",
    )
    group.add_argument(
        "--fail-open",
        action="store_true",
        default=env_bool("fail-open"),
        help="injected sidecars admit requests when Redis is unreachable",
    )


def _add_interval_flags(group: Group) -> None:
    group.add_argument(
        "--status-interval",
        type=float,
        default=env_float("status-interval", 5),
        metavar="SECONDS",
        help="how often statuses are synced from Redis (default 5)",
    )
    group.add_argument(
        "--orphan-interval",
        type=float,
        default=env_float("orphan-interval", 60),
        metavar="SECONDS",
        help="how often policies that no ApiKey owns are withdrawn; also at start (default 60)",
    )
    group.add_argument(
        "--forecast-span",
        type=float,
        default=env_float("forecast-span", 3600),
        metavar="SECONDS",
        help="recent spend the forecast's burn rate is measured over (default 3600)",
    )


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    """Validate the flags into an OperatorConfig; ValueError names the bad flag."""
    if not args.redis:
        msg = "--redis (or REDIS_URL) is required"
        raise ValueError(msg)
    password_file = None if args.redis_password_file is None else Path(args.redis_password_file)
    check_redis(args.redis, password_file)  # RedisUrlError is a ValueError
    return OperatorConfig(
        redis_url=args.redis,
        redis_password_file=password_file,
        global_budget=_global_budget(args.global_budget),
        namespaces=_namespaces(args.namespace),
        health_listen=parse_host_port(args.health_listen),
        webhook_listen=parse_host_port(args.webhook_listen),
        webhook_cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
        sidecar=_sidecar(args),
        status_interval=args.status_interval,
        orphan_interval=args.orphan_interval,
        forecast_span=args.forecast_span,
        peering=args.peering,
        config_namespace=args.config_namespace or None,
    )


def _global_budget(flag: str | None) -> tuple[str, str] | None:
    """--global-budget NAMESPACE/NAME as a pair."""
    if not flag:
        return None
    namespace, sep, name = flag.partition("/")
    if not sep or not namespace or not name:
        msg = f"--global-budget {flag!r} is not NAMESPACE/NAME"
        raise ValueError(msg)
    return namespace, name


def _namespaces(flags: list[str] | None) -> tuple[str, ...]:
    """The --namespace flags, else LLMQUOTA_NAMESPACE split at commas; empty: all."""
    namespaces = flags or [ns for ns in (env("namespace", "") or "").split(",") if ns.strip()]
    return tuple(ns.strip() for ns in namespaces)


def _secret_and_key(flag: str | None, default_key: str) -> tuple[str | None, str]:
    """A NAME:KEY flag as (name, key); the key defaults to `default_key`."""
    name, _, key = (flag or "").partition(":")
    return name or None, key or default_key


def _sidecar(args: argparse.Namespace) -> SidecarConfig | None:
    """What the webhook injects; None without --sidecar-image."""
    if not args.sidecar_image:
        return None
    upstream_secret, upstream_key = _secret_and_key(args.upstream_secret, "api-key")
    redis_secret, redis_key = _secret_and_key(args.sidecar_redis_secret, "url")
    password_secret, password_key = _secret_and_key(args.sidecar_redis_password_secret, "password")
    return SidecarConfig(
        image=args.sidecar_image,
        redis_url=args.redis,
        redis_secret=redis_secret,
        redis_secret_key=redis_key,
        redis_password_secret=password_secret,
        redis_password_secret_key=password_key,
        upstream=args.upstream,
        upstream_secret=upstream_secret,
        upstream_secret_key=upstream_key,
        pricing_config_map=args.sidecar_config_map,
        fail_open=args.fail_open,
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
