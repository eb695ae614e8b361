"""Benchmark: what the sidecar adds over calling the (fake) upstream directly.

Starts a redis-server, `llmquota fake-upstream` and `llmquota sidecar` (standalone, one
key with a budget and an rpm limit, both far from exhausted), then for 1, 16 and 128
concurrent clients, streaming and not, measures per-request latency straight to the
fake upstream and through the sidecar. Overhead = sidecar percentile - direct
percentile. With `taskset` available the sidecar gets core 0 and everything else core 1,
so the load generator does not steal the sidecar's CPU.

Latency on a shared machine swings with whatever else runs; the CPU the sidecar process
spends per request (user + system time over 2,000 sequential keep-alive requests, from
/proc) hardly does, so it is measured too, and the fake upstream's for comparison.

    .venv/bin/python bench/sidecar_overhead.py [--seconds 3] [--cpu-only]

Writes bench/results/sidecar-overhead.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from llmquota.store import EmbeddedRedis

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))  # the one wait helper lives with the tests

from tests.support.waiting import wait_until_sync  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEY = "sk-bench-0001"
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: bench}}
spec:
  budget: {{maxBudget: 1000000, budgetDuration: 30d}}
  rateLimit: {{rpm: 100000000}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bench}}
stringData: {{key: {KEY}}}
"""
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 16,
}


def pinned(core: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command] if shutil.which("taskset") else command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until_sync(answers, timeout, poll_s=0.1, what=url)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def one_request(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool
) -> float:
    body = {**BODY, "stream": stream}
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")
    return time.perf_counter() - started


async def load(base: str, key: str, clients: int, stream: bool, seconds: float) -> dict[str, float]:
    """`clients` loops sending requests back to back for `seconds`; latency stats."""
    url = f"{base}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # warm connections and caches
            await one_request(session, url, headers, stream)
        deadline = time.perf_counter() + seconds

        async def client_loop() -> None:
            while time.perf_counter() < deadline:
                latencies.append(await one_request(session, url, headers, stream))

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sequential(base: str, key: str, requests: int, stream: bool) -> None:
    url = f"{base}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(requests):
            await one_request(session, url, headers, stream)


def cpu_per_request(
    sidecar_url: str,
    sidecar: subprocess.Popen[bytes],
    upstream: subprocess.Popen[bytes],
    requests: int = 2000,
) -> dict[str, float]:
    """CPU ms per proxied request of the sidecar and of the fake upstream behind it."""
    asyncio.run(sequential(sidecar_url, KEY, 100, stream=False))  # warm up
    figures: dict[str, float] = {}
    for stream in (False, True):
        sidecar_before, upstream_before = cpu_seconds(sidecar.pid), cpu_seconds(upstream.pid)
        asyncio.run(sequential(sidecar_url, KEY, requests, stream))
        suffix = "stream" if stream else "whole"
        figures[f"sidecar_ms_{suffix}"] = (
            (cpu_seconds(sidecar.pid) - sidecar_before) * 1000 / requests
        )
        figures[f"upstream_ms_{suffix}"] = (
            (cpu_seconds(upstream.pid) - upstream_before) * 1000 / requests
        )
    return figures


def start(args: list[str], core: int, log: Path) -> subprocess.Popen[bytes]:
    command = pinned(core, [sys.executable, "-m", "llmquota.cli", *args])
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def best_load(
    repeats: int, base: str, key: str, clients: int, stream: bool, seconds: float
) -> dict[str, float]:
    """The `load` run with the lowest median: other work on the machine only ever adds
    latency, so the quickest of a few runs is the nearest to what the code costs."""
    runs = [asyncio.run(load(base, key, clients, stream, seconds)) for _ in range(repeats)]
    return min(runs, key=lambda stats: stats["p50_ms"])


def run(seconds: float, repeats: int, *, cpu_only: bool = False) -> dict[str, Any]:
    if shutil.which("taskset"):
        # The load generator too: on the sidecar's core it would take the CPU it measures.
        os.sched_setaffinity(0, {1})
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="llmquota-bench-"))
    (work / "manifests").mkdir()
    (work / "manifests" / "bench.yaml").write_text(MANIFESTS)
    processes = []
    with EmbeddedRedis(work / "redis") as redis_server:
        if shutil.which("taskset") and redis_server.process is not None:
            subprocess.run(
                ["taskset", "-p", "-c", "1", str(redis_server.process.pid)],
                check=False,
                capture_output=True,
            )
        try:
            # Free ports: a fixed one taken by a leftover process would be measured instead.
            upstream_port, sidecar_port = free_port(), free_port()
            upstream_url = f"http://127.0.0.1:{upstream_port}"
            sidecar_url = f"http://127.0.0.1:{sidecar_port}"
            upstream = start(
                ["fake-upstream", "--listen", f"127.0.0.1:{upstream_port}"], 1, work / "fake.log"
            )
            processes.append(upstream)
            wait_ready(f"{upstream_url}/_fake/requests", upstream)
            sidecar = start(
                [
                    "sidecar",
                    "--listen", f"127.0.0.1:{sidecar_port}",
                    "--upstream", upstream_url,
                    "--redis", redis_server.url,
                    "--manifests", str(work / "manifests"),
                    "--log-level", "WARNING",
                ],
                0,
                work / "sidecar.log",
            )  # fmt: skip
            processes.append(sidecar)
            wait_ready(f"{sidecar_url}/readyz", sidecar)
            cpu = min(
                (cpu_per_request(sidecar_url, sidecar, upstream) for _ in range(repeats)),
                key=lambda figures: figures["sidecar_ms_whole"],
            )
            print(format_cpu(cpu), flush=True)
            rows = []
            for stream in (False, True):
                for clients in () if cpu_only else (1, 16, 128):
                    direct = best_load(repeats, upstream_url, "x", clients, stream, seconds)
                    proxied = best_load(repeats, sidecar_url, KEY, clients, stream, seconds)
                    rows.append(
                        {
                            "stream": stream,
                            "clients": clients,
                            "direct": direct,
                            "sidecar": proxied,
                            "overhead_p50_ms": proxied["p50_ms"] - direct["p50_ms"],
                            "overhead_p99_ms": proxied["p99_ms"] - direct["p99_ms"],
                        }
                    )
                    print(format_row(rows[-1]), flush=True)
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=20)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pinned": bool(shutil.which("taskset")),
            "load_average_1m_start": load_at_start,
            "load_average_1m_end": os.getloadavg()[0],
        },
        "seconds_per_run": seconds,
        "repeats": repeats,
        "cpu_per_request_ms": cpu,
        "rows": rows,
    }


def format_cpu(cpu: dict[str, float]) -> str:
    return (
        f"CPU per request (ms): sidecar {cpu['sidecar_ms_whole']:.3f} whole, "
        f"{cpu['sidecar_ms_stream']:.3f} streamed; fake upstream {cpu['upstream_ms_whole']:.3f} "
        f"whole, {cpu['upstream_ms_stream']:.3f} streamed"
    )


HEADER = (
    "| stream | clients | direct p50 ms | sidecar p50 ms | overhead p50 ms | "
    "direct p99 ms | sidecar p99 ms | overhead p99 ms | direct req/s | sidecar req/s |"
)


def format_row(row: dict[str, Any]) -> str:
    direct, proxied = row["direct"], row["sidecar"]
    return (
        f"| {'yes' if row['stream'] else 'no'} | {row['clients']} | {direct['p50_ms']:.2f} | "
        f"{proxied['p50_ms']:.2f} | {row['overhead_p50_ms']:.2f} | {direct['p99_ms']:.2f} | "
        f"{proxied['p99_ms']:.2f} | {row['overhead_p99_ms']:.2f} | {direct['rps']:.0f} | "
        f"{proxied['rps']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per run (default 2)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per figure, the best kept (default 3)"
    )
    parser.add_argument(
        "--cpu-only", action="store_true", help="measure CPU per request only, write nothing"
    )
    args = parser.parse_args()
    if args.cpu_only:
        run(args.seconds, args.repeats, cpu_only=True)
        return
    print(HEADER)
    print("|" + "---|" * 10)
    results = run(args.seconds, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sidecar-overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    table = "\n".join([HEADER, "|" + "---|" * 10, *(format_row(row) for row in results["rows"])])
    (RESULTS / "sidecar-overhead.md").write_text(
        "# Sidecar overhead\n\n"
        "Latency through `llmquota sidecar` minus latency straight to `llmquota fake-upstream`, "
        "chat completions with max_tokens 16, one key with a 30d budget and an rpm limit, "
        f"Redis on a Unix socket; each figure the best of {args.repeats} runs of "
        f"{args.seconds:g} s on {results['machine']['cpus']} CPUs "
        f"(sidecar pinned to core 0, everything else to core 1: {results['machine']['pinned']}). "
        "1-minute load average at the start and end: "
        f"{results['machine']['load_average_1m_start']:.1f} / "
        f"{results['machine']['load_average_1m_end']:.1f} (the machine is shared; other work "
        "inflates latency figures, far less the CPU per request). "
        "Target: overhead p50 < 1 ms and p99 < 5 ms at 16 clients.\n\n"
        f"{format_cpu(results['cpu_per_request_ms'])} (user + system time over 2,000 "
        "sequential keep-alive requests, best of the runs). From 16 clients on, the "
        "sidecar's one core is the bottleneck (compare the req/s columns), so the overhead "
        "there is mostly queueing for that core: what shortens it is CPU per request.\n\n"
        f"{table}\n\nReproduce: `.venv/bin/python bench/sidecar_overhead.py`.\n"
    )


if __name__ == "__main__":
    main()
