"""The operator's configuration, parsed once from flags and environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HostPort", "OperatorConfig", "SidecarConfig", "parse_host_port"]


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen address."""

    host: str
    port: int


def parse_host_port(text: str) -> HostPort:
    """`HOST:PORT` (IPv6 in brackets) to a HostPort; ValueError names the input."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        msg = f"{text!r} is not HOST:PORT"
        raise ValueError(msg)
    return HostPort(host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 (listen default)


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """What the webhook injects: image, upstream, its credential, the pricing file.

    `pricing_config_map`, `upstream_secret`, `redis_secret` and `redis_password_secret`
    name objects in the operator's namespace (`OperatorConfig.config_namespace`),
    mirrored into the Pods' namespaces.
    """

    image: str
    redis_url: str
    redis_secret: str | None = None
    """Secret whose `redis_secret_key` holds the Redis URL; None: `redis_url` in the env."""
    redis_secret_key: str = "url"  # noqa: S105 (a field name, not a secret)
    redis_password_secret: str | None = None
    """Secret whose `redis_password_secret_key` holds the Redis password, mounted as a file."""
    redis_password_secret_key: str = "password"  # noqa: S105 (a field name, not a secret)
    upstream: str | None = None
    upstream_secret: str | None = None
    upstream_secret_key: str = "api-key"  # noqa: S105 (a field name, not a secret)
    pricing_config_map: str | None = None
    fail_open: bool = False
    resources: Mapping[str, Any] | None = None
    """The container's resources (requests/limits); None: none set."""


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """Everything `llmquota operator` was told on its command line."""

    redis_url: str
    redis_password_file: Path | None = None
    """The Redis password, read from this file (a mounted Secret) rather than the URL."""
    global_budget: tuple[str, str] | None = None
    namespaces: tuple[str, ...] = ()
    health_listen: HostPort = HostPort("0.0.0.0", 8080)  # noqa: S104 (probes come from the kubelet)
    webhook_listen: HostPort = HostPort("0.0.0.0", 9443)  # noqa: S104 (the API server calls in)
    webhook_cert_dir: Path | None = None
    sidecar: SidecarConfig | None = None
    status_interval: float = 5.0
    peering: str | None = None
    recovery_interval: float = 1.0
    orphan_interval: float = 60.0
    """Seconds between sweeps for policies no ApiKey owns (one also runs at start)."""
    forecast_span: float = 3600.0
    """Seconds of recent spend the burn rate is measured over (see `forecast`)."""
    config_namespace: str | None = None
    """Where the sidecar's ConfigMap and credential Secret are (the operator's namespace)."""
