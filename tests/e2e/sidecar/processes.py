"""Starting llmquota processes for end-to-end tests, and manifests to give them."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import openai
import redis
from tests.support.waiting import wait_until_sync

from llmquota.policy import keyspace
from llmquota.policy.key_hash import hash_key

START_TIMEOUT_S = 30.0
APPLY_TIMEOUT_S = 10.0
ClientFactory = Callable[..., openai.OpenAI]
"""`clients(key, url=None)`: an official client for a sidecar, closed after the test."""

LLMQUOTA = [sys.executable, "-m", "llmquota.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Process:
    """A started llmquota subprocess and where its logs go."""

    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start(args: list[str], log: Path, url: str, ready_path: str) -> Process:
    with log.open("wb") as log_file:
        popen = subprocess.Popen(
            [*LLMQUOTA, *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    process = Process(popen, log, url)

    def ready() -> bool:
        if popen.poll() is not None:
            raise RuntimeError(f"{args[0]} exited {popen.returncode}: {process.log_text()}")
        return answers(url + ready_path)

    wait_until_sync(ready, START_TIMEOUT_S, what=f"{args[0]} ready on {url}")
    return process


@dataclass
class Sidecar:
    """One running sidecar in standalone mode, with its manifests directory."""

    process: Process
    manifests: Path
    redis: redis.Redis
    applied: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.process.url

    def has_policy(self, key: str) -> bool:
        return bool(self.redis.exists(keyspace.policy_key(hash_key(key))))

    def apply(self, name: str, text: str, *keys: str) -> None:
        """Write a manifest file and wait until each key's policy is in the store."""
        (self.manifests / f"{name}.yaml").write_text(text)
        for key in keys:
            wait_until_sync(
                functools.partial(self.has_policy, key),
                APPLY_TIMEOUT_S,
                what=f"policy of {name} in the store",
            )


def start_sidecar(
    directory: Path, manifests: Path, redis_url: str, upstream: Process, *extra: str
) -> Process:
    port = free_port()
    key_file = directory / "upstream-key"
    key_file.write_text("sk-upstream-real\n")
    return start(
        [
            "sidecar",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream.url,
            "--upstream-key-file",
            str(key_file),
            "--redis",
            redis_url,
            "--manifests",
            str(manifests),
            # The fake upstream's fault header is no OpenAI header: forwarded on request.
            "--forward-header",
            "x-fake-fault",
            *extra,
        ],
        directory / "sidecar.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )


def team_and_key(
    team: str, key_name: str, key: str, *, team_spec: str = "{}", key_fields: str = ""
) -> str:
    """Manifests for a Team, an ApiKey in it (`key_fields`: more of its spec, in YAML
    flow style, e.g. `models: [gpt-4o]`) and the key's Secret."""
    extra = f", {key_fields}" if key_fields else ""
    return f"""
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {{name: {team}}}
spec: {team_spec}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: {key_name}}}
spec: {{team: {team}{extra}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {key_name}}}
stringData: {{key: {key}}}
"""
