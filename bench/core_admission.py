"""Benchmark: admissions plus settlements per second against one local redis-server.

What a sidecar does per request, without HTTP: admit (one EVALSHA over the policy's
scopes: global, team, member, key budgets; team and key rate limits; key parallel
slots) then settle (one EVALSHA). Run at 1, 16 and 64 requests in flight from one
asyncio client process; reports requests/s and the p50/p99 latency of one admit.

    .venv/bin/python bench/core_admission.py [--seconds 8]

Writes bench/results/core-admission.json and .md. Takes well under two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from llmquota.models import ApiKey, Budget, Team, parse_resource
from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import Admitted, interpret_admit
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.policy.resolve import NamespaceObjects, resolve_key_policy
from llmquota.store import EmbeddedRedis, QuotaStore, find_redis_server

RESULTS = Path(__file__).parent / "results"
CONCURRENCY_LEVELS = (1, 16, 64)
LEASE_MS = 30_000


@dataclass(frozen=True)
class LevelResult:
    """One concurrency level's throughput and admit latency."""

    concurrency: int
    requests: int
    seconds: float
    requests_per_second: float
    admit_p50_ms: float
    admit_p99_ms: float


def manifest(kind: str, name: str, spec: dict[str, object]) -> dict[str, object]:
    """A manifest of `kind` in namespace bench, created at a fixed time."""
    return {
        "apiVersion": "llmquota.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "bench",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": spec,
    }


def bench_policy() -> ResolvedPolicy:
    """A key with every common scope: global, team, member, key; budgets and limits that
    never refuse during the run, so every request is admitted and settled."""
    roomy = {"maxBudget": 1_000_000, "budgetDuration": "30d", "modelMaxBudget": {"gpt-4o": 1e5}}
    limits = {"rpm": 2_000_000_000, "tpm": 2_000_000_000}
    team = parse_resource(
        manifest(
            "Team",
            "bench-team",
            {
                "budget": roomy,
                "rateLimit": limits,
                "members": [{"user": "bench-user", "maxBudgetInTeam": 1_000_000}],
            },
        )
    )
    key = parse_resource(
        manifest(
            "ApiKey",
            "bench-key",
            {
                "team": "bench-team",
                "user": "bench-user",
                "budget": roomy,
                "rateLimit": {**limits, "maxParallelRequests": 10_000},
            },
        )
    )
    everything = parse_resource(manifest("Budget", "global", {"maxBudget": 1_000_000_000}))
    assert isinstance(team, Team)
    assert isinstance(key, ApiKey)
    assert isinstance(everything, Budget)
    return resolve_key_policy(
        key, hash_key("sk-bench"), team, NamespaceObjects({}, {}), global_budget=everything
    )


async def _one_request(
    store: QuotaStore, policy: ResolvedPolicy, estimate: RequestEstimate, latencies: list[float]
) -> None:
    request_id = uuid.uuid4().hex
    call = admission_call(policy, estimate, request_id, LEASE_MS)
    started = time.perf_counter()
    raw = await store.admit(call)
    latencies.append(time.perf_counter() - started)
    if not isinstance(interpret_admit(raw, call), Admitted):
        msg = "the bench policy refused a request"
        raise RuntimeError(msg)
    await store.settle(request_id, estimate.cost_nanos, estimate.tokens)


async def run_level(
    store: QuotaStore, policy: ResolvedPolicy, concurrency: int, seconds: float
) -> LevelResult:
    """`concurrency` workers admitting and settling back to back for `seconds`."""
    estimate = RequestEstimate("gpt-4o", nanos(0.0005), 300)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await _one_request(store, policy, estimate, latencies)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return LevelResult(
        concurrency=concurrency,
        requests=len(latencies),
        seconds=round(elapsed, 2),
        requests_per_second=round(len(latencies) / elapsed, 1),
        admit_p50_ms=round(cuts[49] * 1000, 3),
        admit_p99_ms=round(cuts[98] * 1000, 3),
    )


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_version = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "redis": redis_version,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "transport": "unix socket",
        "client": "one asyncio process (redis-py + hiredis)",
    }


def markdown(results: list[LevelResult], about: dict[str, object], when: str) -> str:
    """The results as a Markdown page."""
    lines = [
        "# Core admission benchmark",
        "",
        f"Measured {when} by `bench/core_admission.py`: admit + settle per request against",
        "one local redis-server; a policy with global, team, member and key scopes.",
        "",
        f"- CPU: {about['cpu']} ({about['cores']} cores, shared with other work; "
        f"load average {about['load_average_1m']} when the run ended)",
        f"- {about['redis']}",
        f"- Python {about['python']}; client: {about['client']}; {about['transport']}",
        "",
        "| concurrency | requests | requests/s | admit p50 (ms) | admit p99 (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.concurrency} | {r.requests} | {r.requests_per_second} "
        f"| {r.admit_p50_ms} | {r.admit_p99_ms} |"
        for r in results
    ]
    return "\n".join(lines) + "\n"


async def main() -> None:
    """Run every level against a fresh embedded redis-server and write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    arguments = parser.parse_args()
    policy = bench_policy()
    results: list[LevelResult] = []
    async with EmbeddedRedis() as server:
        store = QuotaStore.from_url(server.url, max_connections=128)
        try:
            await run_level(store, policy, 4, 1.0)  # warm up: scripts loaded, pool filled
            for concurrency in CONCURRENCY_LEVELS:
                results.append(await run_level(store, policy, concurrency, arguments.seconds))
                print(results[-1])
        finally:
            await store.close()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    about = machine()
    RESULTS.mkdir(exist_ok=True)
    report = {"measured": when, "machine": about, "levels": [asdict(r) for r in results]}
    (RESULTS / "core-admission.json").write_text(json.dumps(report, indent=2) + "\n")
    page = markdown(results, about, when)
    (RESULTS / "core-admission.md").write_text(page)
    print(page)


if __name__ == "__main__":
    asyncio.run(main())
