"""`--redis` and `--redis-password-file` as a user gives them to the real commands: a
Cluster URL refused at start-up in one line that says what to use, a password read from a
file (never on the command line or in a log), a Sentinel URL served through."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tests.e2e.sidecar.processes import LLMQUOTA, free_port, start
from tests.support.redis_server import SentinelGroup, loopback_port

from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server on a loopback port that wants PASSWORD."""
    with EmbeddedRedis(tmp_path / "redis", port=loopback_port()) as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("requirepass", PASSWORD)
        client.close()
        yield server


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMQUOTA, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("command", ["sidecar", "operator"])
def test_a_password_in_both_the_url_and_a_file_is_refused_without_showing_it(
    command: str, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:6379/0"
    result = run(command, "--redis", url, "--redis-password-file", str(secret))
    assert result.returncode != 0
    assert "keep one" in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_the_sidecar_reads_the_password_from_a_file(
    guarded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(f"{PASSWORD}\n")
    port = free_port()
    sidecar = start(
        [
            "sidecar",
            "--listen", f"127.0.0.1:{port}",
            "--redis", guarded_redis.url,
            "--redis-password-file", str(secret),
        ],
        tmp_path / "sidecar.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )  # fmt: skip
    try:
        command_line = Path(f"/proc/{sidecar.popen.pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in command_line
    finally:
        sidecar.stop()
    assert PASSWORD not in sidecar.log_text()


async def test_the_sidecar_serves_through_sentinel(
    sentinel_group: SentinelGroup, tmp_path: Path
) -> None:
    port = free_port()
    sidecar = start(
        ["sidecar", "--listen", f"127.0.0.1:{port}", "--redis", sentinel_group.url],
        tmp_path / "sidecar.log",
        f"http://127.0.0.1:{port}",
        "/readyz",
    )
    sidecar.stop()
    assert sidecar.popen.returncode == 0
