"""One real redis-server for a whole test session, and clean databases inside it.

Tests of the store run the production Lua on a real server, never on a mock: the
properties that matter (atomicity under concurrency, Redis TIME, key expiry) only exist
there. Starting a server takes a fraction of a second, so a session shares one and each
test gets a flushed database.

`SentinelGroup` is a primary, a replica and three Sentinels, for the tests of failover:
a test kills the primary and the Sentinels promote the replica.

`ClusterGroup` is three Redis Cluster primaries, for the tests of what Cluster refuses.

`LLMQUOTA_TEST_REDIS_URL` points the suite at an existing Redis instead (a CI service);
its database is flushed by every test, so never point it at one that holds real data.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from llmquota.store import EmbeddedRedis, find_redis_server

from .waiting import wait_until

__all__ = [
    "EXTERNAL_URL_VARIABLE",
    "SENTINEL_SERVICE",
    "ClusterGroup",
    "RedisEndpoint",
    "RedisNode",
    "SentinelGroup",
    "flush",
    "loopback_port",
    "session_redis",
]

EXTERNAL_URL_VARIABLE = "LLMQUOTA_TEST_REDIS_URL"


@dataclass(frozen=True)
class RedisEndpoint:
    """Where the session's redis-server answers; `url` reaches its test database."""

    url: str


def flush(url: str) -> None:
    """Empty the database at `url` (synchronously, so any event loop may use it after)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def session_redis() -> Iterator[RedisEndpoint]:
    """The external Redis named by the environment, or a private redis-server."""
    external = os.environ.get(EXTERNAL_URL_VARIABLE)
    if external:
        yield RedisEndpoint(external)
        return
    with EmbeddedRedis() as server:
        yield RedisEndpoint(server.url)


SENTINEL_SERVICE = "llmquota"
DOWN_AFTER_MS = 1000
"""How long the Sentinels wait before calling a silent primary down (production: 5-30 s)."""
FAILOVER_TIMEOUT_MS = 5000
START_TIMEOUT_S = 30.0


def loopback_port(bus_offset: int = 0) -> int:
    """A free port on 127.0.0.1 below the ephemeral range; with `bus_offset`, that port
    plus the offset is free and below the range too (a Cluster node's bus port).

    A killed server's clients keep reconnecting to its port; from the ephemeral range one
    of them could be given that very port and connect to itself (TCP self-connect).
    """
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(10_000, min(ephemeral_low - bus_offset, 30_000)), 200):
        if all(_free(candidate) for candidate in {port, port + bus_offset}):
            return port
    msg = "no free port below the ephemeral range"
    raise RuntimeError(msg)


@dataclass
class RedisNode:
    """One redis-server process (a data node, or a Sentinel) on a loopback port."""

    directory: Path
    port: int
    arguments: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens."""
        return ("127.0.0.1", self.port)

    def start(self) -> None:
        """Start the process (in a session of its own, so it is stopped by its pid alone)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [find_redis_server(), *self.arguments],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self, *, kill: bool = False) -> None:
        """SIGKILL when `kill` (a crash), else SIGTERM; waits for the process either way."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self) -> redis.Redis:
        """A synchronous client with short timeouts (close it after use)."""
        return redis.Redis(*self.address, socket_timeout=1, socket_connect_timeout=1)

    def answers(self) -> bool:
        """Whether it replies to PING (and has not exited)."""
        if self.process is None or self.process.poll() is not None:
            log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
            msg = f"redis-server on {self.port} is not running: {log}"
            raise RuntimeError(msg)
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def script_exists(self, sha: str) -> bool:
        """Whether its script cache holds the script `sha`."""
        client = self.client()
        try:
            return bool(client.script_exists(sha)[0])
        finally:
            client.close()

    def info(self, section: str) -> dict[str, Any]:
        """INFO of one section."""
        client = self.client()
        try:
            answer: dict[str, Any] = client.info(section)
            return answer
        finally:
            client.close()


def _data_node(directory: Path, primary: RedisNode | None = None) -> RedisNode:
    port = loopback_port()
    arguments: tuple[str, ...] = (
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--logfile", str(directory / "redis.log"),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
    )  # fmt: skip
    if primary is not None:
        arguments += ("--replicaof", *map(str, primary.address))
    return RedisNode(directory, port, arguments)


def _sentinel(directory: Path, primary: RedisNode) -> RedisNode:
    port = loopback_port()
    directory.mkdir(parents=True, exist_ok=True)
    host, primary_port = primary.address
    # A Sentinel rewrites its configuration file (what it learnt); one file each.
    (directory / "sentinel.conf").write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory}\n"
        f"logfile {directory / 'redis.log'}\n"
        f"sentinel monitor {SENTINEL_SERVICE} {host} {primary_port} 2\n"
        f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SENTINEL_SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
    )
    return RedisNode(directory, port, (str(directory / "sentinel.conf"), "--sentinel"))


class SentinelGroup:
    """One primary, one replica and three Sentinels, real redis-server processes.

    `url` is the `redis+sentinel://` URL a sidecar or the operator is given. Every process
    is stopped by its pid when the group is stopped, whatever state the test left it in.
    """

    def __init__(self, directory: Path) -> None:
        self.primary = _data_node(directory / "primary")
        self.replica = _data_node(directory / "replica", self.primary)
        self.sentinels = [
            _sentinel(directory / f"sentinel-{index}", self.primary) for index in range(3)
        ]

    @property
    def nodes(self) -> list[RedisNode]:
        """Every process of the group."""
        return [self.primary, self.replica, *self.sentinels]

    @property
    def url(self) -> str:
        """The Sentinel URL of the group's service, database 0."""
        hosts = ",".join(f"{host}:{port}" for host, port in (s.address for s in self.sentinels))
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/0"

    async def start(self) -> None:
        """Start every process; ready once the replica is in sync and the Sentinels know
        the replica and each other (else a failover could not be agreed on)."""
        try:
            for node in self.nodes:
                node.start()
            await wait_until(self._ready, START_TIMEOUT_S, poll_s=0.1)
        except BaseException:
            self.stop()
            raise

    async def _ready(self) -> bool:
        if not all(node.answers() for node in self.nodes):
            return False
        if self.replica.info("replication").get("master_link_status") != "up":
            return False
        return all(self._sentinel_sees_all(sentinel) for sentinel in self.sentinels)

    @staticmethod
    def _sentinel_sees_all(sentinel: RedisNode) -> bool:
        client = sentinel.client()
        try:
            state = cast("dict[str, Any]", client.sentinel_master(SENTINEL_SERVICE))
        except redis.RedisError:
            return False
        finally:
            client.close()
        return bool(state["num-other-sentinels"] == 2 and state["num-slaves"] == 1)

    async def wait_replicated(self, timeout_s: float) -> None:
        """Wait until the replica has every write the primary acknowledged so far."""
        target = self.primary.info("replication")["master_repl_offset"]

        async def caught_up() -> bool:
            offset = self.replica.info("replication").get("slave_repl_offset", -1)
            return bool(offset >= target)

        await wait_until(caught_up, timeout_s)

    def primary_address(self) -> tuple[str, int] | None:
        """The primary as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                address = cast(
                    "tuple[bytes, int] | None",
                    client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE),
                )
            except redis.RedisError:
                continue
            finally:
                client.close()
            if address:
                host, port = address
                return (host.decode() if isinstance(host, bytes) else host, int(port))
        return None

    async def wait_for_promotion(self, timeout_s: float) -> float:
        """Wait until the Sentinels name the replica as primary and it accepts writes;
        the seconds that took."""

        async def promoted() -> bool:
            if self.primary_address() != self.replica.address:
                return False
            return bool(self.replica.info("replication").get("role") == "master")

        return await wait_until(promoted, timeout_s, poll_s=0.05)

    def stop(self) -> None:
        """Stop every process still running, by its pid."""
        for node in self.nodes:
            node.stop()


CLUSTER_SLOTS = 16384


class ClusterGroup:
    """Three Redis Cluster primaries sharing the 16384 hash slots, real processes."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.nodes = [_cluster_node(directory / f"node-{index}") for index in range(size)]

    async def start(self) -> None:
        """Start the nodes, give each a third of the slots, introduce them to each other;
        ready once every node reports the cluster ok."""
        try:
            for node in self.nodes:
                node.start()
            await wait_until(self._all_answer, START_TIMEOUT_S, poll_s=0.05)
            share = CLUSTER_SLOTS // len(self.nodes)
            for index, node in enumerate(self.nodes):
                last = (
                    CLUSTER_SLOTS - 1 if index == len(self.nodes) - 1 else (index + 1) * share - 1
                )
                self._command(node, "CLUSTER", "ADDSLOTSRANGE", index * share, last)
            for node in self.nodes[1:]:
                self._command(node, "CLUSTER", "MEET", *self.nodes[0].address)
            await wait_until(self._ok, START_TIMEOUT_S, poll_s=0.1)
        except BaseException:
            self.stop()
            raise

    async def _all_answer(self) -> bool:
        return all(node.answers() for node in self.nodes)

    @property
    def url(self) -> str:
        """The `redis+cluster://` URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.addresses)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Each node's (host, port)."""
        return [node.address for node in self.nodes]

    def flush(self) -> None:
        """Empty every node (scripts stay cached)."""
        for node in self.nodes:
            self._command(node, "FLUSHALL")

    async def _ok(self) -> bool:
        return all(_cluster_ok(node) for node in self.nodes)

    def owner_of(self, slot: int) -> RedisNode:
        """The node that serves `slot`."""
        client = self.nodes[0].client()
        try:
            ranges = cast("list[list[Any]]", client.execute_command("CLUSTER", "SLOTS"))  # type: ignore[no-untyped-call]  # redis-py lacks a hint
        finally:
            client.close()
        for start, end, primary, *_ in ranges:
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == int(primary[1]))
        msg = f"no node serves slot {slot}"
        raise LookupError(msg)

    @staticmethod
    def _command(node: RedisNode, *args: str | int) -> None:
        client = node.client()
        try:
            client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py lacks a hint
        finally:
            client.close()

    def stop(self) -> None:
        """Stop every node still running, by its pid."""
        for node in self.nodes:
            node.stop()


def _cluster_ok(node: RedisNode) -> bool:
    client = node.client()
    try:
        state = cast("dict[str, Any]", client.cluster("INFO"))
    except redis.RedisError:
        return False
    finally:
        client.close()
    return bool(state.get("cluster_state") == "ok" and int(state.get("cluster_known_nodes", 0)) > 1)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


CLUSTER_BUS_OFFSET = 10_000
"""Redis Cluster's node-to-node bus listens on the client port plus this."""


def _cluster_node(directory: Path) -> RedisNode:
    port = loopback_port(CLUSTER_BUS_OFFSET)
    arguments = (
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--logfile", str(directory / "redis.log"),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(directory / "nodes.conf"),
    )  # fmt: skip
    return RedisNode(directory, port, arguments)
