"""Cleaning up after the one-node cluster: by pid, by cgroup, and after killed runs.

Container processes live in cgroups under the node's own root (``/llmquota-node-*`` in
every hierarchy), outside the test run's, and in network namespaces of their own; the
rest of the cluster lives in the node's network namespace. So a run's cleanup kills
every process in that namespace or in those cgroups by its pid and removes the
cgroups. A run that was killed first leaves its state file in the cache; the next start
(or ``python -m tests.support.kube_node cleanup``) sweeps it, unless the session that
wrote it still runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from .kube_apiserver import cache_dir
from .waiting import WaitTimeoutError, wait_until_sync

__all__ = [
    "CGROUP_PREFIX",
    "forget_run",
    "make_cgroup_root",
    "record_run",
    "sweep",
    "sweep_leftovers",
]

CGROUP_PREFIX = "llmquota-node-"
_CGROUP_MOUNT = Path("/sys/fs/cgroup")
_STOP_TIMEOUT_S = 20.0


def _state_dir() -> Path:
    return cache_dir() / "cluster" / "running"


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _netns_pids(holder: int) -> list[int]:
    """Every process in the holder's network namespace, the holder excluded."""
    try:
        namespace = os.stat(f"/proc/{holder}/ns/net")
    except OSError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == holder:
            continue
        with contextlib.suppress(OSError):
            found = os.stat(entry / "ns" / "net")
            if (found.st_dev, found.st_ino) == (namespace.st_dev, namespace.st_ino):
                pids.append(int(entry.name))
    return pids


def _cgroup_dirs(root_name: str) -> list[Path]:
    """The node's cgroup directories in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in _CGROUP_MOUNT.iterdir():
        top = hierarchy / root_name
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def _cgroup_pids(root_name: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(root_name):
        with contextlib.suppress(OSError):
            pids |= {int(line) for line in (directory / "cgroup.procs").read_text().split()}
    return pids


def _kill(pids: set[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def sweep(holder: int | None, root_name: str) -> None:
    """Kill what runs in the namespace and the cgroups (by pid), then remove the cgroups."""
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    left: set[int] = set()

    def killed_all() -> bool:
        nonlocal left
        left = set(_netns_pids(holder) if holder else []) | _cgroup_pids(root_name)
        _kill(left)
        return not left

    try:
        wait_until_sync(killed_all, _STOP_TIMEOUT_S, poll_s=0.1, what="the test node's processes")
    except WaitTimeoutError:
        msg = f"processes of the test node did not exit: {sorted(left)}"
        raise RuntimeError(msg) from None
    if holder:
        _kill([holder])
    remaining: list[Path] = []

    def removed_all() -> bool:
        nonlocal remaining
        remaining = []
        for directory in _cgroup_dirs(root_name):
            try:
                directory.rmdir()
            except OSError:
                remaining.append(directory)
        return not remaining

    try:
        wait_until_sync(removed_all, deadline - time.monotonic(), poll_s=0.1, what="cgroups")
    except WaitTimeoutError:
        msg = f"cgroups of the test node could not be removed: {remaining[:5]}"
        raise RuntimeError(msg) from None


def sweep_leftovers() -> None:
    """Clean up after runs whose process died before their own cleanup could run.

    A run whose owner still lives (another test session on this machine) is left alone.
    """
    live: set[str] = set()
    for state_file in sorted(_state_dir().glob("*.json")):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        holder = state["holder"]
        alive = _start_time(holder) == state["start_time"]
        # Written without its owner (an older version of this module): a live holder
        # may belong to a running session, so only a dead one's leftovers are swept.
        owner = state.get("owner")
        if (_start_time(owner) == state["owner_start_time"]) if owner else alive:
            live.add(state["cgroup"])
            continue
        sweep(holder if alive else None, state["cgroup"])
        state_file.unlink(missing_ok=True)
    for hierarchy in _CGROUP_MOUNT.iterdir():
        for stale in hierarchy.glob(f"{CGROUP_PREFIX}*"):
            if stale.name not in live:
                sweep(None, stale.name)


def make_cgroup_root(root_name: str) -> None:
    """The kubelet's ``cgroupRoot`` in every hierarchy (cpuset needs its cpus and mems)."""
    for hierarchy in _CGROUP_MOUNT.iterdir():
        if not (hierarchy / "cgroup.procs").exists():
            continue
        top = hierarchy / root_name
        top.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for field in ("cpuset.cpus", "cpuset.mems"):
                (top / field).write_text((hierarchy / field).read_text())


def record_run(holder: int, cgroup_root: str) -> Path:
    """Write the state file of a starting run (this process owns it); its path."""
    state_file = _state_dir() / f"{holder}.json"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "owner": os.getpid(),
        "owner_start_time": _start_time(os.getpid()),
        "holder": holder,
        "start_time": _start_time(holder),
        "cgroup": cgroup_root,
    }
    state_file.write_text(json.dumps(state))
    return state_file


def forget_run(holder: int, cgroup_root: str) -> None:
    """The run's own cleanup: sweep it, then drop its state file."""
    sweep(holder, cgroup_root)
    (_state_dir() / f"{holder}.json").unlink(missing_ok=True)
