"""Where the store's Redis is: the URL forms of `--redis`, and the client each one needs.

`redis://`, `rediss://` and `unix://` name one server. `redis+sentinel://` (and
`rediss+sentinel://`, TLS to the sentinels and the primary alike) names Sentinels that
know the primary of a service: redis-py's Sentinel client asks them for the primary's
address on every new connection, so after a failover the next connection lands on the
promoted replica without a restart. `redis+cluster://` (and `rediss+cluster://`) names
seed nodes of a Redis Cluster: redis-py's RedisCluster client learns the slot map from
them, sends each command to the primary of its key's slot and follows MOVED/ASK and a
failover (a promoted replica takes its primary's slots).

A password may come from a file (`--redis-password-file`, a mounted Secret) instead of the
URL. The file is read on every new connection, so a rotated Secret takes effect without a
restart. No error message here repeats a password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.credentials import CredentialProvider
from redis.maint_notifications import MaintNotificationsConfig

ResultT = TypeVar("ResultT")

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "PasswordFile",
    "RedisLocation",
    "RedisUrlError",
    "check_redis",
    "connect",
    "parse_redis_url",
]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
KNOWN_SCHEMES = ", ".join(
    f"{scheme}://" for scheme in (*SINGLE_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
)
# What RedisCluster takes of the connection options callers pass; the rest (a blocking
# pool's timeout) have no cluster counterpart: each node's pool holds `max_connections`.
_CLUSTER_OPTIONS = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "max_connections",
        "retry",
        "credential_provider",
        "username",
        "password",
        "maint_notifications_config",
    }
)

# A command that meets a broken connection (a primary that died, a failover in progress)
# is retried on a fresh one a few times, about 1 s in all, then fails: the sidecar answers
# 503 (or fails open) instead of holding requests for as long as a failover takes.
RETRIES = 4
RETRY_BASE_S = 0.05
RETRY_CAP_S = 0.5
SENTINEL_TIMEOUT_S = 1.0
HEALTH_CHECK_INTERVAL_S = 10


class _CancellableRetry(Retry):
    """redis-py's retries, which also give back a cancellation the client swallowed.

    With a socket timeout, redis-py sends every command through `asyncio.wait_for`,
    which in Python 3.11 drops a cancellation that arrives just as the send completes
    (it returns the send's result, or raises its error as a ConnectionError). A loop
    that retries on Redis errors would then never end at shutdown. A cancellation
    requested during the call (the task's `cancelling()` count rose) that did not end
    it is raised here; one requested before (a cancelled task cleaning up) is not.
    """

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[ResultT]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> ResultT:
        """`Retry.call_with_retry`, then CancelledError if a cancellation was swallowed."""
        task = asyncio.current_task()
        requested = 0 if task is None else task.cancelling()
        try:
            result = await super().call_with_retry(do, fail, is_retryable, with_failure_count)
        except Exception as error:
            if task is not None and task.cancelling() > requested:
                raise asyncio.CancelledError from error
            raise
        if task is not None and task.cancelling() > requested:
            raise asyncio.CancelledError
        return result


def _retry(retries: int) -> Retry:
    """Jittered exponential backoff from RETRY_BASE_S to RETRY_CAP_S, `retries` times."""
    return _CancellableRetry(ExponentialWithJitterBackoff(RETRY_CAP_S, RETRY_BASE_S), retries)


class RedisUrlError(ValueError):
    """A `--redis` URL that cannot be used; the message names the problem, never a password."""


@dataclass(frozen=True, slots=True)
class RedisLocation:
    """A parsed `--redis` URL: one server, a Sentinel service, or a Cluster."""

    kind: Literal["single", "sentinel", "cluster"]
    url: str = field(repr=False)
    """The URL as given (for `single`, what redis-py parses); may hold the password."""
    nodes: tuple[tuple[str, int], ...] = ()
    """Sentinels (`sentinel`) or seed nodes (`cluster`); none for `single`."""
    service: str = ""
    """The Sentinel service (`sentinel monitor <service> ...`)."""
    db: int = 0
    """The database of a Sentinel service (a single URL carries its own)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """Never shown: a logged location must not carry it."""
    tls: bool = False

    @property
    def url_without_credentials(self) -> str:
        """The URL without `user:pass@`, for a client whose credentials come from a file."""
        scheme, _, rest = self.url.partition("://")
        authority, slash, path = rest.partition("/")
        return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def parse_redis_url(url: str) -> RedisLocation:
    """Read one of the URL forms of `--redis`; RedisUrlError says what is wrong."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in (*SINGLE_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
        shown = scheme if separator else "no scheme"
        msg = f"--redis: unknown URL scheme ({shown}); use one of {KNOWN_SCHEMES}"
        raise RedisUrlError(msg)
    if scheme in SINGLE_SCHEMES:
        return _single(url, scheme)
    authority, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    credentials, _, hosts = authority.rpartition("@")
    username, password = _credentials(credentials)
    default_port = DEFAULT_SENTINEL_PORT if scheme in SENTINEL_SCHEMES else DEFAULT_PORT
    nodes = tuple(_host_port(node, default_port) for node in hosts.split(","))
    tls = scheme.startswith("rediss")
    if query:
        msg = f"--redis: {scheme}:// takes no query string (?{query.split('=')[0]}=...)"
        raise RedisUrlError(msg)
    if scheme in CLUSTER_SCHEMES:
        if path.strip("/") not in ("", "0"):
            msg = "--redis: a Redis Cluster has only database 0"
            raise RedisUrlError(msg)
        return RedisLocation("cluster", url, nodes, username=username, password=password, tls=tls)
    service, _, db_text = path.partition("/")
    if not service:
        msg = f"--redis: {scheme}:// needs the service name: {scheme}://HOST:PORT,.../SERVICE[/DB]"
        raise RedisUrlError(msg)
    return RedisLocation(
        "sentinel",
        url,
        nodes,
        service=unquote(service),
        db=_db(db_text.strip("/")),
        username=username,
        password=password,
        tls=tls,
    )


def _single(url: str, scheme: str) -> RedisLocation:
    """One server: redis-py reads the URL itself; checked here so a typo fails at start."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        valid = False
    else:
        valid = scheme == "unix" or bool(parts.hostname)
    if not valid:
        msg = f"--redis: {scheme}:// needs HOST[:PORT], e.g. {scheme}://redis:6379/0"
        raise RedisUrlError(msg)
    return RedisLocation(
        "single",
        url,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=scheme == "rediss",
    )


def _credentials(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, separator, password = text.partition(":")
    return unquote(user) or None, unquote(password) if separator else None


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, port = text, ""
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        port = after.removeprefix(":")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or (port and not port.isdigit()) or not 0 < int(port or default_port) < 65536:
        msg = f"--redis: {text!r} is not HOST:PORT"
        raise RedisUrlError(msg)
    return host, int(port or default_port)


def _db(text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        msg = f"--redis: database {text!r} is not a number"
        raise RedisUrlError(msg)
    return int(text)


@dataclass(frozen=True, slots=True)
class PasswordFile(CredentialProvider):
    """Credentials for each new connection: the URL's user and the file's first line."""

    path: Path
    username: str | None = None

    def read(self) -> str:
        """The password; RedisUrlError when the file cannot be read or is empty."""
        try:
            password = self.path.read_text().strip()
        except OSError as error:
            msg = f"--redis-password-file {self.path}: {error.strerror}"
            raise RedisUrlError(msg) from None
        if not password:
            msg = f"--redis-password-file {self.path} is empty"
            raise RedisUrlError(msg)
        return password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        """(password) or (username, password), as redis-py's AUTH takes them."""
        password = self.read()
        return (password,) if self.username is None else (self.username, password)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        """The same; a small local file is read in place."""
        return self.get_credentials()


class _SentinelRedis(Redis):
    """The primary's client; closing it also closes the connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            with contextlib.suppress(ConnectionError, OSError):
                await pool.sentinel_manager.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool that makes callers wait for a free connection instead of failing."""


def check_redis(url: str, password_file: Path | None = None) -> RedisLocation:
    """What `connect` would use, checked at start-up without connecting.

    RedisUrlError (one line, no password in it) for a bad URL, a password given both in
    the URL and in a file, or a password file that cannot be read.
    """
    location = parse_redis_url(url)
    if password_file is not None:
        if location.password is not None:
            msg = "--redis carries a password and --redis-password-file gives one: keep one"
            raise RedisUrlError(msg)
        PasswordFile(password_file).read()
    return location


def connect(
    url: str,
    *,
    password_file: Path | None = None,
    pool_timeout: float | None = None,
    **options: Any,
) -> Redis | RedisCluster:
    """A client (lazily connected, pooled) for the Redis that `url` names.

    `pool_timeout`: callers wait that long for a free connection (a blocking pool) instead
    of failing when all `max_connections` are busy. `options` go to every connection
    (`socket_timeout`, `max_connections`, ...). RedisUrlError as `check_redis` raises it.
    """
    location = check_redis(url, password_file)
    options = _with_defaults(location, options)
    if password_file is not None:
        options["credential_provider"] = PasswordFile(password_file, location.username)
    elif location.username is not None or location.password is not None:
        options["username"] = location.username
        options["password"] = location.password
    if location.kind == "sentinel":
        return _sentinel_client(location, pool_timeout, options)
    if location.kind == "cluster":
        return _cluster_client(location, options)
    pool_class: type[ConnectionPool] = ConnectionPool
    if pool_timeout is not None:
        pool_class = BlockingConnectionPool
        options["timeout"] = pool_timeout
    single_url = location.url if password_file is None else location.url_without_credentials
    pool = pool_class.from_url(single_url, **options)
    return Redis.from_pool(pool)


def _with_defaults(location: RedisLocation, options: dict[str, Any]) -> dict[str, Any]:
    """Timeouts and retries an SRE expects of a long-running client.

    Maintenance notifications (a Redis Enterprise feature, on by default over TCP in
    redis-py 8) make the pool skip its check for connections the server closed, so after
    a Redis restart every pooled connection would fail one request.
    """
    merged = dict(options)
    merged.setdefault("health_check_interval", HEALTH_CHECK_INTERVAL_S)
    merged.setdefault("retry", _retry(RETRIES))
    if not location.url.startswith("unix://"):
        merged.setdefault("socket_keepalive", True)
        merged.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
    return merged


def _cluster_client(location: RedisLocation, options: dict[str, Any]) -> RedisCluster:
    """A Redis Cluster, discovered from its seed nodes on first use.

    Connection errors are retried by the cluster client itself (it refreshes the slot map
    and tries again, as at a failover), with the same backoff as a single server's.
    """
    cluster_options = {name: value for name, value in options.items() if name in _CLUSTER_OPTIONS}
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in location.nodes],
        ssl=location.tls,
        **cluster_options,
    )


def _sentinel_client(
    location: RedisLocation, pool_timeout: float | None, options: dict[str, Any]
) -> Redis:
    """The primary of a Sentinel service, found again on every new connection."""
    options.pop("maint_notifications_config", None)  # not a Sentinel-pool option
    # A Sentinel that does not answer at once is skipped for the next one in the list.
    sentinel_options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "retry": _retry(0),
    }
    if location.tls:
        sentinel_options["ssl"] = True
        options["ssl"] = True
    pool_class: type[SentinelConnectionPool] = SentinelConnectionPool
    if pool_timeout is not None:
        pool_class = _BlockingSentinelPool
        options["timeout"] = pool_timeout
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py lacks a hint
        list(location.nodes), sentinel_kwargs=sentinel_options
    )
    client: Redis = sentinel.master_for(
        location.service,
        redis_class=_SentinelRedis,
        connection_pool_class=pool_class,
        db=location.db,
        **options,
    )
    return client
