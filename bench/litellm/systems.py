"""The processes a comparison run starts: Redis, the fake upstream, LiteLLM, llmquota.

Each system under test is started as M processes on loopback ports sharing one Redis
(its own), configured with the same keys: `KeySpec`s, each a key with a budget, an
optional budget window and an rpm limit. A system is a context manager that yields the
base URLs of its processes and stops all it started, by process group, on exit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.support.waiting import wait_until_sync

from llmquota.store import EmbeddedRedis

__all__ = [
    "MODEL",
    "KeySpec",
    "fake_upstream",
    "litellm_available",
    "litellm_proxies",
    "llmquota_available",
    "llmquota_sidecars",
    "pin_others",
    "pinning",
    "processes",
    "redis_server",
]

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
START_TIMEOUT_S = 120.0  # LiteLLM takes ~10 s alone, longer when M start at once on 2 cores

# With 2 cores or more, the proxies under test get core 0 and everything else -- the
# load generator, the fake upstream, Redis -- the others (`pin_others`), so that a
# proxy's figures are its own CPU's, not the load generator's (as bench/sidecar_overhead.py
# does). Both systems' processes share core 0 alike.
PROXY_CORE = 0


def pinning() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pin_others() -> None:
    """Move this process, and so what it starts from now on, off the proxies' core."""
    if pinning():
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {PROXY_CORE})


def _on_proxy_core(command: list[str]) -> list[str]:
    return ["taskset", "-c", str(PROXY_CORE), *command] if pinning() else command


@dataclass(frozen=True)
class KeySpec:
    """One virtual key as both systems are told it."""

    name: str  # Kubernetes object name on the llmquota side
    key: str  # the bearer token clients send
    max_budget: float  # USD
    rpm: int
    budget_duration_s: int | None = None  # None: never resets
    anchor: datetime | None = None  # llmquota: creationTimestamp, where windows are cut


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(
    processes: Sequence[subprocess.Popen[bytes]], urls: Sequence[str], logs: Sequence[Path]
) -> None:
    pending = list(zip(processes, urls, logs, strict=True))

    def all_ready() -> bool:
        for entry in list(pending):
            process, url, log = entry
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                msg = f"{process.args!r} exited with {process.returncode}; log {log}:\n{tail}"
                raise RuntimeError(msg)
            if _answers(url):
                pending.remove(entry)
        return not pending

    wait_until_sync(all_ready, START_TIMEOUT_S, poll_s=0.1, what=f"ready at {list(urls)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End a process this module started, and its children, by its own process group."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def processes(
    commands: Sequence[list[str]],
    ready_urls: Sequence[str],
    logs: Sequence[Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[None]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as output:
                started.append(
                    subprocess.Popen(
                        command, stdout=output, stderr=subprocess.STDOUT,
                        env=env, cwd=cwd, start_new_session=True,
                    )
                )  # fmt: skip
        _wait_ready(started, ready_urls, logs)
        yield
    finally:
        for process in started:
            _stop(process)


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[tuple[str, int]]:
    """A private redis-server on a loopback TCP port; yields (host, port)."""
    port = free_port()
    with EmbeddedRedis(folder, port=port):
        yield "127.0.0.1", port


@contextlib.contextmanager
def fake_upstream(folder: Path, *, prompt_tokens: int, completion_tokens: int) -> Iterator[str]:
    """`llmquota fake-upstream` with fixed token counts; yields its base URL."""
    port = free_port()
    listen = f"127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "llmquota.cli", "fake-upstream", "--listen", listen,
        "--prompt-tokens", str(prompt_tokens), "--completion-tokens", str(completion_tokens),
    ]  # fmt: skip
    base = f"http://{listen}"
    with processes([command], [f"{base}/v1/models"], [folder / "fake-upstream.log"]):
        yield base


# ---------------------------------------------------------------- LiteLLM


def litellm_python() -> Path:
    """Install LiteLLM's proxy when needed (bench/litellm/install.sh); its venv's python."""
    output = subprocess.run(
        ["bash", str(HERE / "install.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(output.strip().splitlines()[-1])


def litellm_available() -> str | None:
    """None when LiteLLM's proxy can be run, else why not."""
    try:
        litellm_python()
    except subprocess.CalledProcessError as error:
        return f"bench/litellm/install.sh failed with exit status {error.returncode}"
    return None


def litellm_version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.strip()  # fmt: skip


@contextlib.contextmanager
def litellm_proxies(
    folder: Path, *, upstream: str, redis: tuple[str, int], keys: Sequence[KeySpec], count: int
) -> Iterator[list[str]]:
    """`count` LiteLLM proxies, one uvicorn worker each, sharing `redis`; yields base URLs.

    No database can run here (docs/litellm-comparison.md), so keys come from the
    custom-auth hook and LiteLLM's counters from `coordination_redis`.
    """
    python = litellm_python()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "litellm_key_hook.py", folder / "litellm_key_hook.py")
    limits = {spec.key: {"max_budget": spec.max_budget, "rpm_limit": spec.rpm} for spec in keys}
    (folder / "keys.json").write_text(json.dumps(limits))
    redis_host, redis_port = redis
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{upstream}/v1",
                    "api_key": "sk-upstream-bench",
                },
            }
        ],
        "general_settings": {
            "master_key": "sk-master-bench-unused",
            "custom_auth": "litellm_key_hook.user_api_key_auth",
            "custom_auth_run_common_checks": True,
            "coordination_redis": {"host": redis_host, "port": redis_port},
        },
    }
    # JSON is YAML: LiteLLM reads it with its YAML loader.
    (folder / "config.yaml").write_text(json.dumps(config, indent=2))
    env = {
        **os.environ,
        # Without it each start first tries to fetch the model price map from GitHub.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LLMQUOTA_BENCH_KEYS": str(folder / "keys.json"),
        "PYTHONPATH": str(folder),
    }
    ports = [free_port() for _ in range(count)]
    commands = [
        _on_proxy_core([
            str(python.parent / "litellm"), "--config", str(folder / "config.yaml"),
            "--host", "127.0.0.1", "--port", str(port),
        ])
        for port in ports
    ]  # fmt: skip
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    with processes(
        commands,
        [f"{base}/health/liveliness" for base in bases],
        [folder / f"litellm-{index}.log" for index in range(count)],
        env=env,
        cwd=folder,
    ):
        yield bases


# ---------------------------------------------------------------- llmquota


def llmquota_available() -> str | None:
    """None when `llmquota sidecar` can be run, else why not."""
    if importlib.util.find_spec("llmquota.sidecar") is None:
        return "llmquota.sidecar is not there yet"
    try:
        importlib.import_module("llmquota.sidecar.command")
    except ImportError as error:
        return f"`llmquota sidecar` does not import yet: {error}"
    return None


def _duration(seconds: int) -> str:
    for unit, length in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def llmquota_manifests(keys: Sequence[KeySpec]) -> str:
    """ApiKey + Secret manifests, as one would `kubectl apply` them."""
    documents: list[str] = []
    for spec in keys:
        budget: dict[str, object] = {"maxBudget": spec.max_budget}
        if spec.budget_duration_s is not None:
            budget["budgetDuration"] = _duration(spec.budget_duration_s)
        metadata: dict[str, object] = {"name": spec.name}
        if spec.anchor is not None:
            metadata["creationTimestamp"] = spec.anchor.astimezone(UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        api_key = {
            "apiVersion": "llmquota.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": metadata,
            "spec": {
                "budget": budget,
                "rateLimit": {"rpm": spec.rpm},
                "secretName": f"{spec.name}-key",
            },
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{spec.name}-key"},
            "stringData": {"key": spec.key},
        }
        documents += [json.dumps(api_key), json.dumps(secret)]
    # JSON documents are YAML documents.
    return "\n---\n".join(documents) + "\n"


@contextlib.contextmanager
def llmquota_sidecars(
    folder: Path, *, upstream: str, redis: tuple[str, int], keys: Sequence[KeySpec], count: int
) -> Iterator[list[str]]:
    """`count` llmquota sidecars in standalone mode sharing `redis`; yields base URLs."""
    folder.mkdir(parents=True, exist_ok=True)
    manifests = folder / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "keys.yaml").write_text(llmquota_manifests(keys))
    (folder / "upstream-key").write_text("sk-upstream-bench\n")
    redis_host, redis_port = redis
    ports = [free_port() for _ in range(count)]
    commands = [
        _on_proxy_core([
            sys.executable, "-m", "llmquota.cli", "sidecar",
            "--listen", f"127.0.0.1:{port}",
            "--upstream", upstream,
            "--upstream-key-file", str(folder / "upstream-key"),
            "--redis", f"redis://{redis_host}:{redis_port}/0",
            "--manifests", str(manifests),
        ])
        for port in ports
    ]  # fmt: skip
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    with processes(
        commands,
        [f"{base}/readyz" for base in bases],
        [folder / f"sidecar-{index}.log" for index in range(count)],
    ):
        yield bases
