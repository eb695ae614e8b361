"""Benchmark: the gateway's `--workers N` on this machine's cores, requests/s against N.

One llmquota (`llmquota sidecar --workers N`, the 2-scope key of bench/floors.py) with
Redis and the fake upstream, nothing pinned: the workers, wrk, the upstream and Redis
share the machine's cores, as a gateway Pod shares its node. For each N, whole answers at
`--clients` connections: requests/s, p50/p99, and CPU ms per request of the gateway's
processes (all workers) over the same run. Rounds are interleaved; best of the rounds.

    .venv/bin/python bench/gateway_workers.py [--workers 1,2] [--rounds 3] [--seconds 5]

Writes bench/results/gateway-workers.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from bench import floors  # noqa: E402
from bench.litellm import systems  # noqa: E402


@contextlib.contextmanager
def gateways(work: Path, counts: list[int]) -> Iterator[dict[int, floors.System]]:
    """One gateway per worker count, sharing Redis and the upstream; by count."""
    with contextlib.ExitStack() as stack:
        redis_host, redis_port = stack.enter_context(systems.redis_server(work / "redis"))
        redis = f"redis://{redis_host}:{redis_port}/0"
        upstream = stack.enter_context(
            systems.fake_upstream(work, prompt_tokens=12, completion_tokens=16)
        )
        (work / "upstream-key").write_text("sk-upstream-bench\n")
        found = {}
        for count in counts:
            folder = work / f"workers-{count}"
            folder.mkdir()
            spec = systems.KeySpec("floor-key", floors.KEY, 1_000_000, 100_000_000, 30 * 86_400)
            (folder / "keys.yaml").write_text(systems.llmquota_manifests([spec]))
            port = systems.free_port()
            command = floors.sidecar_command(
                folder, upstream, redis, port, "--workers", str(count), "--health-listen", "off"
            )
            base = f"http://127.0.0.1:{port}"
            stack.enter_context(
                systems.processes([command], [base + "/readyz"], [work / f"{folder.name}.log"])
            )
            worker = floors.pid_listening_on(port)
            parent = int(Path(f"/proc/{worker}/stat").read_text().rpartition(")")[2].split()[1])
            found[count] = floors.System(f"{count} workers", base, parent if count > 1 else worker)
        yield found


def measure(system: floors.System, script: Path, clients: int, seconds: int) -> dict[str, float]:
    url = f"{system.base}/v1/chat/completions"
    floors.wrk(url, script, clients=clients, seconds=1, pinned=False)  # warm every worker
    before = floors.cpu_seconds(system.pid)
    run = floors.wrk(url, script, clients=clients, seconds=seconds, pinned=False)
    spent = floors.cpu_seconds(system.pid) - before
    return {**run, "cpu_ms_per_request": 1e3 * spent / run["requests"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", metavar="N,...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    counts = [int(count) for count in args.workers.split(",")]
    load_at_start = os.getloadavg()[0]
    runs: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
    with (
        tempfile.TemporaryDirectory(prefix="llmquota-gateway-") as tmp,
        gateways(Path(tmp), counts) as found,
    ):
        script = floors.wrk_script(Path(tmp), stream=False, user=False)
        for _ in range(args.rounds):
            for count, system in found.items():
                runs[count].append(measure(system, script, args.clients, args.seconds))
    best = {
        count: {
            "requests_per_s": max(r["requests_per_s"] for r in found_runs),
            "p50_ms": min(r["p50_ms"] for r in found_runs),
            "p99_ms": min(r["p99_ms"] for r in found_runs),
            "cpu_ms_per_request": min(r["cpu_ms_per_request"] for r in found_runs),
        }
        for count, found_runs in runs.items()
    }
    first = best[counts[0]]["requests_per_s"]
    lines = [
        f"| workers | req/s at {args.clients} clients | x {counts[0]} worker | p50 / p99 ms "
        "| CPU ms/request (all workers) |",
        "|---|---|---|---|---|",
    ]
    for count, figures in best.items():
        lines.append(
            f"| {count} | {figures['requests_per_s']:,.0f} | "
            f"{figures['requests_per_s'] / first:.2f} | "
            f"{figures['p50_ms']:.2f} / {figures['p99_ms']:.2f} | "
            f"{figures['cpu_ms_per_request']:.3f} |"
        )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    heading = (
        "# Gateway: requests/s against --workers\n\n"
        f"`python bench/gateway_workers.py --workers {args.workers} --rounds {args.rounds} "
        f"--seconds {args.seconds} --clients {args.clients}`, {time.strftime('%Y-%m-%d')}, "
        f"{machine}, load average {load_at_start:.2f} at start, {os.getloadavg()[0]:.2f} at "
        "end. Nothing pinned: the workers share the cores with wrk, the fake upstream and "
        "Redis. Whole chat completions, max_tokens 16, a 30d budget and an rpm limit.\n"
    )
    markdown = heading + "\n" + "\n".join(lines) + "\n"
    print(markdown)
    (floors.RESULTS / "gateway-workers.md").write_text(markdown)
    serial = {"load_average_1m_start": load_at_start, "clients": args.clients, "results": best}
    (floors.RESULTS / "gateway-workers.json").write_text(json.dumps(serial, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
