"""What `llmquota sidecar` is told: listen address, upstream, store, limits of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmquota.store import ReplicaWait

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CONNECTIONS", "SidecarSettings"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Each client connection may hold an upstream connection too: two descriptors, within
# the usual container limit of 1024 with room for Redis, logs and the listener.
DEFAULT_MAX_CONNECTIONS = 400


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """The sidecar's configuration; `command` builds it from flags and environment."""

    host: str = "127.0.0.1"
    port: int = 4000
    # Where /healthz, /readyz and /metrics are served besides `port` (the Pod's IP, for
    # the kubelet and Prometheus); None: nowhere else.
    health_listen: tuple[str, int] | None = None
    upstream: str = "https://api.openai.com"
    upstream_key_file: Path | None = None
    # None: start an embedded redis-server for this process alone.
    redis_url: str | None = None
    # The Redis password, read from this file (a mounted Secret) rather than the URL.
    redis_password_file: Path | None = None
    # Replicas each settle waits for (Redis WAIT), at most `redis_wait_timeout` seconds.
    redis_wait_replicas: int = 0
    redis_wait_timeout: float = 0.1
    manifests: Path | None = None
    # The Pod's identity for keyless requests (docs/keyless.md), set by the injection
    # webhook: the downward API volume (files `namespace`, `labels`) and the workload.
    identity_dir: Path | None = None
    workload: str | None = None
    global_budget: str | None = None
    # Standalone mode's spend snapshot, restored after a wiped store (None: memory only).
    state_file: Path | None = None
    fail_open: bool = False
    pricing: Path | None = None
    lease_seconds: float = 30.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Longest wait for a request body to arrive in full: a client that stalls mid-body
    # gets 408 and loses its connection instead of holding it.
    body_timeout: float = 60.0
    # Longest a connection may take to deliver its next request's headers (from its
    # start, or from the end of the previous response): idle and dribbling ones close.
    header_timeout: float = 20.0
    # Connections held at once; past it the oldest idle one is closed (or the new one
    # answered 503 when all are inside a request).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Client headers forwarded upstream besides wire.FORWARDED_HEADERS (lower case).
    forward_headers: frozenset[str] = frozenset()
    # Longest wait for the upstream's next bytes (a reasoning model may think for minutes).
    upstream_timeout: float = 600.0
    # How long a shutdown waits for requests in flight before cutting them off.
    shutdown_timeout: float = 30.0
    # The listener shares its address with sibling workers (SO_REUSEPORT, `--workers`).
    reuse_port: bool = False

    @property
    def replica_wait(self) -> ReplicaWait | None:
        """What a settle waits for, as the store takes it; None: no wait."""
        if self.redis_wait_replicas == 0:
            return None
        return ReplicaWait(self.redis_wait_replicas, int(self.redis_wait_timeout * 1000))

    @property
    def lease_ms(self) -> int:
        """The lease of a reservation in milliseconds, as the store takes it."""
        return int(self.lease_seconds * 1000)

    @property
    def upstream_base(self) -> str:
        """The upstream's API root: `https://api.openai.com` becomes `.../v1`."""
        base = self.upstream.rstrip("/")
        return base if base.endswith("/v1") else f"{base}/v1"
