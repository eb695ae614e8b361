"""Benchmark: how much Redis CPU one request costs, and what one primary sustains.

Sizing model: a request is one admit and one settle; a primary spends `admit + settle`
microseconds of CPU on it, so one shard serves at most `1e6 / (admit + settle µs)`
requests/s, and a Cluster of n shards n times that while the load spreads over hash tags
(one per team). A global budget is the exception: every request reserves in its one slot,
so the node serving it caps the whole Cluster at `1e6 / (its µs per request)`.

Measured per topology (a single primary; a 3-primary Cluster with and without a global
budget), with a policy of global (where set), team, member and key scopes over 32 teams:
an admit-only phase (no settle, leases long) and then a settle phase over the same
requests, each after `CONFIG RESETSTAT` on every node. Reported per phase and node:
`INFO commandstats` EVALSHA/EVAL usec_per_call (script time inside Redis) and the
node's process CPU (`INFO cpu`, user + sys: script time plus parsing and network I/O),
both divided by the requests of the phase. The load comes from one asyncio client
process over loopback TCP; on a small shared machine the client, not Redis, limits the
requests/s achieved, so the figure to size with is the model's.

    .venv/bin/python bench/redis_capacity.py [--seconds 6]

Writes bench/results/redis_capacity.json and .md. Takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from bench.core_admission import machine, manifest  # noqa: E402
from tests.support.redis_server import ClusterGroup, loopback_port  # noqa: E402

from llmquota.models import ApiKey, Budget, Team, parse_resource  # noqa: E402
from llmquota.policy.admission import RequestEstimate, admission_call  # noqa: E402
from llmquota.policy.decision import Admitted, interpret_admit  # noqa: E402
from llmquota.policy.key_hash import hash_key  # noqa: E402
from llmquota.policy.limits import ResolvedPolicy, nanos  # noqa: E402
from llmquota.policy.resolve import NamespaceObjects, resolve_key_policy  # noqa: E402
from llmquota.store import EmbeddedRedis, QuotaStore  # noqa: E402

RESULTS = REPO / "bench" / "results"
TEAMS = 32
CONCURRENCY = 32
LEASE_MS = 3_600_000
ESTIMATE = RequestEstimate("gpt-4o", nanos(0.0005), 300)


@dataclass(frozen=True)
class Phase:
    """One phase (admit or settle) on one topology: per request, summed over nodes."""

    topology: str
    phase: str
    requests: int
    requests_per_second: float
    script_us_per_request: float
    """EVALSHA (+ EVAL) time inside Redis, per request, all nodes."""
    cpu_us_per_request: float
    """Redis processes' CPU (user + sys), per request, all nodes."""
    busiest_node_cpu_us_per_request: float
    """The busiest node's share of it: what caps a Cluster's requests/s."""


def policies(*, with_global: bool) -> list[ResolvedPolicy]:
    """One key per team (TEAMS of them, so hash tags spread over the slots), each with a
    member, budgets and rate limits that never refuse during the run."""
    roomy = {"maxBudget": 1_000_000, "budgetDuration": "30d"}
    limits = {"rpm": 2_000_000_000, "tpm": 2_000_000_000}
    everything = parse_resource(manifest("Budget", "global", {"maxBudget": 1_000_000_000}))
    assert isinstance(everything, Budget)
    resolved = []
    for index in range(TEAMS):
        team = parse_resource(
            manifest(
                "Team",
                f"team-{index}",
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
                f"key-{index}",
                {
                    "team": f"team-{index}",
                    "user": "bench-user",
                    "budget": roomy,
                    "rateLimit": {**limits, "maxParallelRequests": 10_000},
                },
            )
        )
        assert isinstance(team, Team)
        assert isinstance(key, ApiKey)
        resolved.append(
            resolve_key_policy(
                key,
                hash_key(f"sk-bench-{index}"),
                team,
                NamespaceObjects({}, {}),
                global_budget=everything if with_global else None,
            )
        )
    return resolved


def _nodes_stats(addresses: list[tuple[str, int]]) -> list[tuple[float, float]]:
    """Per node: (script µs so far, process CPU µs so far)."""
    stats = []
    for host, port in addresses:
        client = redis.Redis(host, port)
        try:
            commands = client.info("commandstats")
            cpu = client.info("cpu")
        finally:
            client.close()
        script_us = sum(
            float(commands.get(name, {}).get("usec", 0))
            for name in ("cmdstat_evalsha", "cmdstat_eval")
        )
        stats.append((script_us, (cpu["used_cpu_user"] + cpu["used_cpu_sys"]) * 1e6))
    return stats


def _reset(addresses: list[tuple[str, int]]) -> None:
    for host, port in addresses:
        client = redis.Redis(host, port)
        try:
            client.config_resetstat()
        finally:
            client.close()


async def _phase(
    topology: str,
    name: str,
    addresses: list[tuple[str, int]],
    work: Sequence[Callable[[], Awaitable[None]]],
) -> Phase:
    """Run `work` (coroutine factories) CONCURRENCY at a time; Redis' cost per item."""
    _reset(addresses)
    before = _nodes_stats(addresses)
    queue = list(work)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            await queue.pop()()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    after = _nodes_stats(addresses)
    script = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    cpu = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    count = len(work)
    return Phase(
        topology=topology,
        phase=name,
        requests=count,
        requests_per_second=round(count / elapsed, 1),
        script_us_per_request=round(sum(script) / count, 1),
        cpu_us_per_request=round(sum(cpu) / count, 1),
        busiest_node_cpu_us_per_request=round(max(cpu) / count, 1),
    )


async def measure(
    topology: str,
    url: str,
    addresses: list[tuple[str, int]],
    resolved: list[ResolvedPolicy],
    seconds: float,
) -> list[Phase]:
    """Warm up, then an admit phase of about `seconds` and a settle phase over it."""
    store = QuotaStore.from_url(url, max_connections=128)
    try:
        admitted: list[str] = []

        async def admit(policy: ResolvedPolicy) -> None:
            request_id = uuid.uuid4().hex
            call = admission_call(policy, ESTIMATE, request_id, LEASE_MS)
            if not isinstance(interpret_admit(await store.admit(call), call), Admitted):
                msg = "the bench policy refused a request"
                raise RuntimeError(msg)
            admitted.append(request_id)

        async def settle(request_id: str) -> None:
            await store.settle(request_id, ESTIMATE.cost_nanos, ESTIMATE.tokens)

        async def settle_all() -> None:
            for request_id in admitted:
                await settle(request_id)
            admitted.clear()

        warm = [functools.partial(admit, policy) for policy in resolved]
        await _phase(topology, "warm-up", addresses, warm * 4)
        await settle_all()
        # Size the admit phase to about `seconds` from the warm-up's pace.
        probe = await _phase(topology, "probe", addresses, warm * 8)
        await settle_all()
        count = max(int(probe.requests_per_second * seconds), len(resolved))
        work = [functools.partial(admit, resolved[i % len(resolved)]) for i in range(count)]
        admit_phase = await _phase(topology, "admit", addresses, work)
        settle_phase = await _phase(
            topology,
            "settle",
            addresses,
            [functools.partial(settle, request_id) for request_id in admitted],
        )
        return [admit_phase, settle_phase]
    finally:
        await store.close()


@asynccontextmanager
async def single_primary() -> AsyncIterator[tuple[str, list[tuple[str, int]]]]:
    """One redis-server on loopback TCP."""
    port = loopback_port()
    async with EmbeddedRedis(port=port) as server:
        yield server.url, [("127.0.0.1", port)]


@asynccontextmanager
async def three_shards() -> AsyncIterator[tuple[str, list[tuple[str, int]]]]:
    """A three-primary Redis Cluster on loopback."""
    with tempfile.TemporaryDirectory(prefix="llmquota-bench-cluster-") as directory:
        group = ClusterGroup(Path(directory))
        await group.start()
        try:
            yield group.url, group.addresses
        finally:
            group.stop()


def capacity(phases: list[Phase]) -> dict[str, dict[str, float]]:
    """Per topology: CPU µs per request (admit + settle) and the model's requests/s."""
    model: dict[str, dict[str, float]] = {}
    for topology in dict.fromkeys(phase.topology for phase in phases):
        admit, settle = (
            next(p for p in phases if p.topology == topology and p.phase == name)
            for name in ("admit", "settle")
        )
        total = admit.cpu_us_per_request + settle.cpu_us_per_request
        busiest = admit.busiest_node_cpu_us_per_request + settle.busiest_node_cpu_us_per_request
        model[topology] = {
            "script_us_per_request": round(
                admit.script_us_per_request + settle.script_us_per_request, 1
            ),
            "cpu_us_per_request": round(total, 1),
            "busiest_node_cpu_us_per_request": round(busiest, 1),
            "model_requests_per_second": round(1e6 / busiest),
        }
    return model


def markdown(
    phases: list[Phase], model: dict[str, dict[str, float]], about: dict[str, object], when: str
) -> str:
    """The results as a Markdown page."""
    lines = [
        "# Redis capacity",
        "",
        f"Measured {when} by `bench/redis_capacity.py`: Redis CPU per admit and per settle",
        "for a policy with team, member and key scopes (and the global budget where named),",
        f"{TEAMS} teams, {CONCURRENCY} requests in flight from one asyncio process, loopback TCP.",
        "",
        f"- CPU: {about['cpu']} ({about['cores']} cores, shared with other work; "
        f"load average {about['load_average_1m']} when the run ended)",
        f"- {about['redis']}",
        "",
        "| topology | phase | requests | requests/s achieved | script wall µs / req | "
        "Redis CPU µs / req (all nodes) | busiest node µs / req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.topology} | {p.phase} | {p.requests} | {p.requests_per_second} "
        f"| {p.script_us_per_request} | {p.cpu_us_per_request} "
        f"| {p.busiest_node_cpu_us_per_request} |"
        for p in phases
    ]
    lines += [
        "",
        "Script wall µs: `INFO commandstats` usec of EVALSHA/EVAL, time inside the scripts,",
        "which includes waiting for a CPU on a loaded machine; Redis CPU µs: the servers'",
        "user + sys CPU over the phase (scripts, parsing, network I/O), the figure to size by.",
        "Requests/s achieved is what one Python client process drove, not what Redis could take.",
        "",
        "Sizing model: requests/s per shard = 1e6 / (CPU µs per request on that shard); a",
        "Cluster is capped by its busiest node (with a global budget: the one serving its slot).",
        "",
        "| topology | CPU µs / request (admit + settle) | busiest node µs / request "
        "| model: requests/s |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {topology} | {row['cpu_us_per_request']} | {row['busiest_node_cpu_us_per_request']} "
        f"| {int(row['model_requests_per_second'])} |"
        for topology, row in model.items()
    ]
    return "\n".join(lines) + "\n"


async def main() -> None:
    """Measure each topology in turn and write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="per admit phase")
    arguments = parser.parse_args()
    phases: list[Phase] = []
    async with single_primary() as (url, addresses):
        phases += await measure(
            "1 primary, global budget",
            url,
            addresses,
            policies(with_global=True),
            arguments.seconds,
        )
    async with three_shards() as (url, addresses):
        phases += await measure(
            "3 shards, global budget",
            url,
            addresses,
            policies(with_global=True),
            arguments.seconds,
        )
        phases += await measure(
            "3 shards, no global budget",
            url,
            addresses,
            policies(with_global=False),
            arguments.seconds,
        )
    for phase in phases:
        print(phase)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    about = {**machine(), "transport": "loopback TCP"}
    model = capacity(phases)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "measured": when,
        "machine": about,
        "phases": [asdict(phase) for phase in phases],
        "model": model,
    }
    (RESULTS / "redis_capacity.json").write_text(json.dumps(report, indent=2) + "\n")
    page = markdown(phases, model, about, when)
    (RESULTS / "redis_capacity.md").write_text(page)
    print(page)


if __name__ == "__main__":
    asyncio.run(main())
