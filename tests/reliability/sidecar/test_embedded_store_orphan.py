"""A standalone sidecar that is SIGKILLed (the OOM killer, `kill -9`, a crashed node agent)
takes its embedded redis-server with it, and a `--workers` gateway its workers.

Without `--redis` the sidecar starts a redis-server of its own. A SIGKILL gives the
sidecar no chance to stop it, so unless the server watches its parent it lives on as an
orphan: outside a container it holds memory and its socket directory forever, and a
restarted sidecar starts another one beside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from tests.e2e.sidecar.processes import Process, free_port, start, team_and_key
from tests.reliability.rig import UPSTREAM_KEY
from tests.support.waiting import wait_until_sync

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

GONE_WITHIN_S = 10.0


def children_named(parent: int, name: str) -> list[int]:
    """Pids of `parent`'s children whose command is `name` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command, _, after = (entry / "stat").read_text().rpartition(")")
            if after.split()[1] == str(parent) and command.endswith(f"({name}"):
                found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent counts as gone)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def stop_with_children(sidecar: Process, children: list[int]) -> None:
    """Stop the sidecar and whichever of its `children` (started through it by the test)
    outlived it."""
    sidecar.stop()
    for orphan in children:
        if not gone(orphan):
            os.kill(orphan, signal.SIGKILL)


def start_standalone(tmp_path: Path, upstream: Process, *extra: str) -> Process:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "keys.yaml").write_text(team_and_key("team", "bot", "sk-orphan-0001"))
    key_file = tmp_path / "upstream-key"
    key_file.write_text(f"{UPSTREAM_KEY}\n")
    port = free_port()
    return start(
        ["sidecar", "--listen", f"127.0.0.1:{port}", "--upstream", upstream.url,
         "--upstream-key-file", str(key_file), "--manifests", str(manifests), *extra],
        tmp_path / "sidecar.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )  # fmt: skip


@pytest.mark.parametrize("extra", [(), ("--workers", "2")], ids=["one-process", "workers"])
def test_a_sigkilled_sidecar_takes_its_redis_server_with_it(
    tmp_path: Path, upstream: Process, extra: tuple[str, ...]
) -> None:
    sidecar = start_standalone(tmp_path, upstream, *extra)
    servers = children_named(sidecar.popen.pid, "redis-server")
    workers = children_named(sidecar.popen.pid, "python3")
    try:
        assert len(servers) == 1, servers
        os.kill(sidecar.popen.pid, signal.SIGKILL)
        sidecar.popen.wait()
        wait_until_sync(
            lambda: gone(servers[0]), GONE_WITHIN_S, what="the orphaned redis-server's end"
        )
    finally:
        stop_with_children(sidecar, servers + workers)


def test_a_sigkilled_gateway_takes_its_workers_with_it(tmp_path: Path, upstream: Process) -> None:
    """Workers left behind would serve on, unsupervised, holding the port a restarted
    gateway needs (SO_REUSEPORT lets it bind beside them, so both would serve)."""
    sidecar = start_standalone(tmp_path, upstream, "--workers", "2", "--shutdown-timeout", "1")
    workers = children_named(sidecar.popen.pid, "python3")
    servers = children_named(sidecar.popen.pid, "redis-server")
    try:
        assert len(workers) == 2, workers
        os.kill(sidecar.popen.pid, signal.SIGKILL)
        sidecar.popen.wait()
        wait_until_sync(
            lambda: all(gone(worker) for worker in workers),
            GONE_WITHIN_S,
            what="the orphaned workers' end",
        )
    finally:
        stop_with_children(sidecar, servers + workers)
