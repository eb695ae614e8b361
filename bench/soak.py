"""Soak: does a sidecar under steady mixed traffic keep its memory and file descriptors?

Starts a redis-server, `llmquota fake-upstream` and two `llmquota sidecar` processes in
standalone mode over the same Redis and manifests, then for --minutes sends mixed
traffic through both: streamed and whole chat completions, embeddings, model lists, on
several keys, some of which are refused (an exhausted budget: 402, an rpm limit: 429, a
model not allowed: 403, an unknown key: 401). Every --sample-seconds it reads each
sidecar's resident memory (/proc/PID/status VmRSS) and open descriptors (/proc/PID/fd).

Stable means: after a warm-up (the first third of the run), RSS grows by less than
--rss-growth-limit (relative) and the descriptor count by at most --fd-growth-limit.

With --operator the run has the cluster's shape instead: the test bed's real
kube-apiserver (`make testbed`), the same manifests applied with kubectl, `llmquota
operator` writing the policies and syncing statuses every 2 s, and sidecars reading
policies from Redis (no --manifests); the operator is sampled too.

    .venv/bin/python bench/soak.py [--minutes 3] [--sample-seconds 5] [--operator]

Writes bench/results/soak.json and .md and prints the summary. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from llmquota.store import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test bed's launcher and the wait helper live with the tests

from tests.support.waiting import wait_until, wait_until_sync  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SOAK_NAMESPACE = "soak"
UPSTREAM_KEY = "sk-soak-upstream"
KEYS = {
    "steady": "sk-soak-steady-0001",
    "second": "sk-soak-second-0002",
    "broke": "sk-soak-broke-0003",
    "throttled": "sk-soak-throttled-0004",
    "narrow": "sk-soak-narrow-0005",
}
UNKNOWN_KEY = "sk-soak-unknown-0006"
KEY_WEIGHTS = {"steady": 40, "second": 40, "broke": 7, "throttled": 7, "narrow": 6}
"""Mostly served traffic, with a share of each kind of refusal."""


def manifests() -> str:
    specs = {
        "steady": "{team: soak}",
        "second": "{team: soak, budget: {maxBudget: 1000, budgetDuration: 1h}}",
        "broke": "{team: soak, budget: {maxBudget: 0.0005}}",
        "throttled": "{team: soak, rateLimit: {rpm: 30}}",
        "narrow": "{team: soak, models: [gpt-4o]}",
    }
    documents = [
        "apiVersion: llmquota.dev/v1alpha1\nkind: Team\nmetadata: {name: soak}\n"
        "spec: {budget: {maxBudget: 100000, budgetDuration: 1d}, rateLimit: {rpm: 10000000}}"
    ]
    for name, spec in specs.items():
        documents.append(
            f"apiVersion: llmquota.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}}}\n"
            f"spec: {spec}"
        )
        documents.append(
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\n"
            f"stringData: {{key: {KEYS[name]}}}"
        )
    return "\n---\n".join(documents) + "\n"


CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 16,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until_sync(answers, timeout, poll_s=0.1, what=url)


def start(
    args: list[str], log: Path, ready_url: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmquota.cli", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
        )
    wait_ready(ready_url, process)
    return process


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Series:
    """Samples of one process: seconds since start, RSS KiB, open descriptors."""

    name: str
    pid: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def sample(self, elapsed: float) -> None:
        self.samples.append((round(elapsed, 1), rss_kib(self.pid), open_fds(self.pid)))

    def summary(self, rss_growth_limit: float, fd_growth_limit: int) -> dict[str, Any]:
        warm = self.samples[len(self.samples) // 3]
        end = self.samples[-1]
        rss_growth = (end[1] - warm[1]) / warm[1]
        fd_growth = end[2] - warm[2]
        return {
            "process": self.name,
            "rss_start_mib": round(self.samples[0][1] / 1024, 1),
            "rss_after_warmup_mib": round(warm[1] / 1024, 1),
            "rss_end_mib": round(end[1] / 1024, 1),
            "rss_max_mib": round(max(s[1] for s in self.samples) / 1024, 1),
            "rss_growth_after_warmup": round(rss_growth, 4),
            "fds_start": self.samples[0][2],
            "fds_after_warmup": warm[2],
            "fds_end": end[2],
            "fds_max": max(s[2] for s in self.samples),
            "stable": rss_growth < rss_growth_limit and fd_growth <= fd_growth_limit,
        }


async def one_request(
    session: aiohttp.ClientSession, url: str, outcomes: collections.Counter[str]
) -> None:
    """One request of the mix; its outcome is counted by status (and kind)."""
    roll = random.random()
    (name,) = random.choices(list(KEY_WEIGHTS), weights=list(KEY_WEIGHTS.values()))
    key = UNKNOWN_KEY if random.random() < 0.02 else KEYS[name]
    headers = {"Authorization": f"Bearer {key}"}
    if roll < 0.55:
        kind, method, path, body = "chat", "POST", "/v1/chat/completions", CHAT
    elif roll < 0.85:
        kind, method, path, body = (
            "stream",
            "POST",
            "/v1/chat/completions",
            {**CHAT, "stream": True},
        )
    elif roll < 0.95:
        kind, method, path = "embeddings", "POST", "/v1/embeddings"
        body = {"model": "text-embedding-3-small", "input": "soak"}
    else:
        kind, method, path, body = "models", "GET", "/v1/models", None
    try:
        async with session.request(method, url + path, json=body, headers=headers) as response:
            await response.read()
            outcomes[f"{kind} {response.status}"] += 1
    except (aiohttp.ClientError, TimeoutError) as error:
        outcomes[f"{kind} {type(error).__name__}"] += 1


async def traffic(
    urls: list[str], seconds: float, concurrency: int, rate: float
) -> collections.Counter[str]:
    """Requests from `concurrency` workers, paced to `rate` per second in all."""
    outcomes: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    interval = concurrency / rate
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker(index: int) -> None:
            url = urls[index % len(urls)]
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                await one_request(session, url, outcomes)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return outcomes


async def sampler(series: list[Series], seconds: float, every: float) -> None:
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        for one in series:
            one.sample(elapsed)
        if elapsed >= seconds:
            return
        await asyncio.sleep(min(every, max(0.0, seconds - elapsed)))


def start_operator(
    stack: contextlib.ExitStack, workdir: Path, manifest: Path, redis_url: str
) -> subprocess.Popen[bytes]:
    """The test bed's API server with the manifests applied, and the operator on it."""
    from tests.support.kube_apiserver import (  # noqa: PLC0415 - needs the path above
        find_binaries,
        run_kube_apiserver,
    )

    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("--operator needs the test bed: run `make testbed` first")
    kube = stack.enter_context(run_kube_apiserver(binaries, workdir=workdir / "kube"))
    crds = [arg for path in sorted((ROOT / "crds").glob("*.yaml")) for arg in ("-f", str(path))]
    kube.kubectl("apply", "--server-side", *crds, check=True)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds, check=True)
    kube.kubectl("create", "namespace", SOAK_NAMESPACE, check=True)
    kube.kubectl("apply", "-n", SOAK_NAMESPACE, "-f", str(manifest), check=True)
    health = free_port()
    return start(
        ["operator", "--redis", redis_url, "--namespace", SOAK_NAMESPACE,
         "--health-listen", f"127.0.0.1:{health}", "--status-interval", "2"],
        workdir / "operator.log", f"http://127.0.0.1:{health}/healthz",
        env={"KUBECONFIG": str(kube.kubeconfig)},
    )  # fmt: skip


async def wait_for_policies(redis_url: str, count: int, within_s: float = 60) -> None:
    """Until the operator has written a policy for every key with a Secret."""
    client = aioredis.Redis.from_url(redis_url)

    async def all_written() -> bool:
        return bool(await client.scard("llmquota:policies") >= count)

    try:
        await wait_until(all_written, within_s, poll_s=0.1, what=f"{count} policies written")
    finally:
        await client.aclose()


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    manifest_dir = workdir / "manifests"
    manifest_dir.mkdir()
    (manifest_dir / "soak.yaml").write_text(manifests())
    key_file = workdir / "upstream-key"
    key_file.write_text(UPSTREAM_KEY + "\n")
    processes: list[subprocess.Popen[bytes]] = []
    series: list[Series] = []
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(EmbeddedRedis())
        try:
            policy_source = ["--manifests", str(manifest_dir)]
            if args.operator:
                operator = start_operator(
                    stack, workdir, manifest_dir / "soak.yaml", redis_server.url
                )
                processes.append(operator)
                series.append(Series("operator", operator.pid))
                await wait_for_policies(redis_server.url, len(KEYS))
                policy_source = []
            upstream_port = free_port()
            upstream_url = f"http://127.0.0.1:{upstream_port}"
            processes.append(start(
                ["fake-upstream", "--listen", f"127.0.0.1:{upstream_port}",
                 "--require-key", UPSTREAM_KEY, "--latency-ms", str(args.latency_ms)],
                workdir / "fake-upstream.log", f"{upstream_url}/_fake/requests",
            ))  # fmt: skip
            urls = []
            for index in range(2):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                sidecar = start(
                    ["sidecar", "--listen", f"127.0.0.1:{port}", "--upstream", upstream_url,
                     "--upstream-key-file", str(key_file), "--redis", redis_server.url,
                     *policy_source, "--log-level", "warning"],
                    workdir / f"sidecar-{index}.log", f"{url}/readyz",
                )  # fmt: skip
                processes.append(sidecar)
                series.append(Series(f"sidecar-{index}", sidecar.pid))
                urls.append(url)
            seconds = args.minutes * 60
            outcomes, _ = await asyncio.gather(
                traffic(urls, seconds, args.concurrency, args.rate),
                sampler(series, seconds, args.sample_seconds),
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)
    summaries = [one.summary(args.rss_growth_limit, args.fd_growth_limit) for one in series]
    total = sum(outcomes.values())
    return {
        "minutes": args.minutes,
        "sample_seconds": args.sample_seconds,
        "concurrency": args.concurrency,
        "target_rate": args.rate,
        "upstream_latency_ms": args.latency_ms,
        "requests": total,
        "requests_per_second": round(total / (args.minutes * 60), 1),
        "outcomes": dict(sorted(outcomes.items())),
        "criteria": {
            "rss_growth_after_warmup_below": args.rss_growth_limit,
            "fd_growth_after_warmup_at_most": args.fd_growth_limit,
        },
        "stable": all(summary["stable"] for summary in summaries),
        "processes": summaries,
        "samples": {one.name: one.samples for one in series},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "operator": args.operator,
    }


def markdown(result: dict[str, Any]) -> str:
    shape = (
        "with the operator on a real kube-apiserver writing the policies"
        if result.get("operator")
        else "standalone (policies from --manifests)"
    )
    lines = [
        "# Soak",
        "",
        f"{result['minutes']} min of mixed traffic through two sidecars over one Redis, "
        f"{shape} "
        f"({result['concurrency']} concurrent clients paced to {result['target_rate']:g} "
        f"req/s, fake upstream with "
        f"{result['upstream_latency_ms']} ms latency): {result['requests']} requests, "
        f"{result['requests_per_second']} req/s, on {result['machine']['cpus']} CPUs. "
        f"RSS and open descriptors sampled every {result['sample_seconds']} s. "
        f"Stable = after the first third of the run, RSS grows less than "
        f"{result['criteria']['rss_growth_after_warmup_below']:.0%} and descriptors by at "
        f"most {result['criteria']['fd_growth_after_warmup_at_most']}. "
        f"**Stable: {'yes' if result['stable'] else 'NO'}.**",
        "",
        "| process | RSS start MiB | after warm-up | end | max | growth after warm-up "
        "| fds start | after warm-up | end | max | stable |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["processes"]:
        lines.append(
            f"| {p['process']} | {p['rss_start_mib']} | {p['rss_after_warmup_mib']} | "
            f"{p['rss_end_mib']} | {p['rss_max_mib']} | {p['rss_growth_after_warmup']:+.1%} | "
            f"{p['fds_start']} | {p['fds_after_warmup']} | {p['fds_end']} | {p['fds_max']} | "
            f"{'yes' if p['stable'] else 'no'} |"
        )
    lines += ["", "Outcomes (kind, status):", ""]
    lines += [f"- {outcome}: {count}" for outcome, count in result["outcomes"].items()]
    lines += [
        "",
        "Reproduce: `.venv/bin/python bench/soak.py` (`--minutes N` to change; `--operator` "
        "for the operator on the test bed).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=300.0, help="requests/s, all clients")
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--rss-growth-limit", type=float, default=0.10)
    parser.add_argument("--fd-growth-limit", type=int, default=5)
    parser.add_argument(
        "--operator", action="store_true", help="policies from the operator on the test bed"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmquota-soak-") as tmp:
        result = asyncio.run(soak(args, Path(tmp)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    report = markdown(result)
    (RESULTS / "soak.md").write_text(report)
    print(report)
    return 0 if result["stable"] else 1


if __name__ == "__main__":
    sys.exit(main())
