"""Benchmark: how fast the operator turns `kubectl apply` into enforcement, and at scale.

1. Cold start: 2,000 ApiKeys in 200 Teams exist before the operator starts; time from
   starting `llmquota operator` to every ApiKey Ready=True (Secrets generated, policies
   in Redis, statuses written), and the operator's peak memory (VmHWM, peak RSS).
2. Policy latency: `kubectl apply` of a lowered Budget (referenced by a Team, used by a
   key) until the key's policy in Redis carries the new maxBudget; p50/p99 over N
   applies, measured while the 2,000 keys' status timers run. (The sidecar reads the
   policy from Redis, refreshed by pub/sub; the end-to-end "sidecar refuses" figure is
   the sidecar benchmark's.)

Runs against a real kube-apiserver + etcd from the test bed (testbed/build.sh, or
KUBEBUILDER_ASSETS) and a real redis-server.

    .venv/bin/python bench/operator_reconcile.py [--keys 2000] [--teams 200] [--samples 40]

Writes bench/results/operator.json and .md. Bounded: gives up after --deadline seconds.
"""

from __future__ import annotations

import argparse
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from llmquota.policy import keyspace
from llmquota.policy.resolved import ResolvedPolicy, nanos
from llmquota.store import EmbeddedRedis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.kube_apiserver import (
    KubeAPIServer,
    find_binaries,
    run_kube_apiserver,
)

RESULTS = Path(__file__).parent / "results"
GROUP = "llmquota.dev/v1alpha1"
READY = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def apply(kube: KubeAPIServer, namespace: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 500):
        chunk = {"apiVersion": "v1", "kind": "List", "items": items[start : start + 500]}
        kube.kubectl(
            "-n",
            namespace,
            "apply",
            "--server-side",
            "-f",
            "-",
            input=json.dumps(chunk),
            check=True,
            timeout=300,
        )


def install_crds(kube: KubeAPIServer, workdir: Path) -> None:
    out = workdir / "crds"
    subprocess.run([sys.executable, "-m", "llmquota.cli", "crds", "--write", str(out)], check=True)
    files = [arg for path in sorted(out.glob("*.yaml")) for arg in ("-f", str(path))]
    kube.kubectl("apply", "--server-side", *files, check=True)
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *files, check=True)


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def count_ready(kube: KubeAPIServer, namespace: str) -> int:
    listed = kube.kubectl("-n", namespace, "get", "apikeys", "-o", f"jsonpath={READY}", timeout=120)
    return listed.stdout.split().count("True")


def cold_start(
    kube: KubeAPIServer,
    db: redis.Redis,
    namespace: str,
    keys: int,
    process: subprocess.Popen[bytes],
    started: float,
    deadline: float,
) -> dict[str, Any]:
    """Poll Redis (cheap) until every policy is there, then kubectl until all are Ready.

    Listing 2,000 objects with kubectl costs the API server a second of CPU, so it is
    polled only once the policies are all in; the Ready conditions are written with them.
    """
    samples: list[tuple[float, int, int]] = []
    ready = 0
    while ready < keys and time.monotonic() - started < deadline:
        policies = db.scard(keyspace.POLICY_INDEX)
        if policies >= keys:
            ready = count_ready(kube, namespace)
        elapsed = round(time.monotonic() - started, 1)
        if not samples or elapsed - samples[-1][0] >= 5 or ready == keys:
            samples.append((elapsed, policies, ready))
            print(f"  {elapsed:6.1f}s  {policies} policies, {ready}/{keys} Ready", flush=True)
        if process.poll() is not None:
            raise RuntimeError("the operator exited")
        time.sleep(0.5 if policies < keys else 1.0)
    return {
        "keys": keys,
        "all_ready": ready == keys,
        "seconds_to_all_ready": samples[-1][0] if ready == keys else None,
        "ready_at_end": ready,
        "progress_seconds_policies_ready": samples,
    }


def policy_latency(
    kube: KubeAPIServer, db: redis.Redis, namespace: str, samples: int
) -> dict[str, Any]:
    budget = {
        "apiVersion": GROUP,
        "kind": "Budget",
        "metadata": {"name": "tier"},
        "spec": {"maxBudget": 1000},
    }
    apply(
        kube,
        namespace,
        [
            budget,
            {
                "apiVersion": GROUP,
                "kind": "Team",
                "metadata": {"name": "t"},
                "spec": {"budgetRef": {"name": "tier"}},
            },
            {
                "apiVersion": GROUP,
                "kind": "ApiKey",
                "metadata": {"name": "k"},
                "spec": {"team": "t"},
            },
        ],
    )
    key_hash = wait_key_hash(db, namespace, "k")
    latencies: list[float] = []
    for sample in range(samples):
        max_budget = 999 - sample
        budget["spec"] = {"maxBudget": max_budget}
        started = time.perf_counter()
        kube.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(budget), check=True)
        while True:
            raw = db.get(keyspace.policy_key(key_hash))
            policy = ResolvedPolicy.model_validate_json(raw) if raw else None
            team = next((s for s in policy.scopes if s.kind == "team"), None) if policy else None
            if team and team.budget and team.budget.max_nanos == nanos(max_budget):
                break
            if time.perf_counter() - started > 30:
                raise RuntimeError("policy did not change within 30 s")
            time.sleep(0.002)
        latencies.append(time.perf_counter() - started)
    ordered = sorted(latencies)
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def wait_key_hash(db: redis.Redis, namespace: str, name: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for member in db.smembers(keyspace.POLICY_INDEX):
            key_hash = member.decode() if isinstance(member, bytes) else str(member)
            raw = db.get(keyspace.policy_key(key_hash))
            if (
                raw
                and (p := ResolvedPolicy.model_validate_json(raw)).namespace == namespace
                and p.key_name == name
            ):
                return p.key_hash
        time.sleep(0.05)
    raise RuntimeError(f"no policy for {namespace}/{name}")


def markdown(report: dict[str, Any]) -> str:
    cold, latency, machine = report["cold_start"], report["policy_latency"], report["machine"]
    return "\n".join(
        [
            "# Operator benchmark",
            "",
            f"Measured {report['measured']} by `bench/operator_reconcile.py` against a real",
            "kube-apiserver + etcd (test bed) and redis-server on the same machine.",
            "",
            f"- Machine: {machine['cpus']} CPUs (shared with other work; load average "
            f"{machine['load_average']} at the end), Python {machine['python']}",
            "- Operator: `llmquota operator --status-interval "
            f"{report['status_interval']}`, one process",
            "",
            "| measurement | value |",
            "|---|---:|",
            f"| cold start: {cold['keys']} ApiKeys in {report['teams']} Teams, all Ready (s) | "
            f"{cold['seconds_to_all_ready'] if cold['all_ready'] else 'not reached'} |",
            f"| cold start: ApiKeys Ready at the end | {cold['ready_at_end']} |",
            f"| operator peak RSS (MiB) | {report['peak_rss_mib']} |",
            f"| operator RSS at the end (MiB) | {report['rss_at_end_mib']} |",
            f"| `kubectl apply` lowered Budget -> policy in Redis, p50 (ms) | {latency['p50_ms']} "
            "|",
            f"| ... p99 (ms) | {latency['p99_ms']} |",
            f"| ... max over {latency['samples']} applies (ms) | {latency['max_ms']} |",
            "",
            "The latency includes starting kubectl (a process per apply) and is measured while",
            f"the {cold['keys']} keys' status timers run. RSS is VmHWM of the operator process.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--status-interval", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=240.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("no test bed: run testbed/build.sh (or set KUBEBUILDER_ASSETS)")
    tmp = tempfile.mkdtemp(prefix="bench-operator-")
    print(f"work directory: {tmp}", flush=True)
    with (
        run_kube_apiserver(binaries, workdir=Path(tmp) / "kube", controller_manager=False) as kube,
        EmbeddedRedis() as redis_server,
    ):
        install_crds(kube, Path(tmp))
        cold_ns, latency_ns = "bench-cold", "bench-latency"
        for namespace in (cold_ns, latency_ns):
            kube.kubectl("create", "namespace", namespace, check=True)
        per_team = args.keys // args.teams
        items: list[dict[str, Any]] = [
            {
                "apiVersion": GROUP,
                "kind": "Team",
                "metadata": {"name": f"team-{t}"},
                "spec": {"budget": {"maxBudget": 100, "budgetDuration": "30d"}},
            }
            for t in range(args.teams)
        ] + [
            {
                "apiVersion": GROUP,
                "kind": "ApiKey",
                "metadata": {"name": f"key-{k}"},
                "spec": {"team": f"team-{k // per_team}", "budget": {"maxBudget": 5}},
            }
            for k in range(args.keys)
        ]
        print(f"creating {args.teams} Teams and {args.keys} ApiKeys ...", flush=True)
        apply(kube, cold_ns, items)
        log_path = Path(tmp) / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
        with log_path.open("wb") as log:
            started = time.monotonic()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmquota.cli",
                    "operator",
                    "--redis",
                    redis_server.url,
                    "--namespace",
                    cold_ns,
                    "--namespace",
                    latency_ns,
                    "--health-listen",
                    f"127.0.0.1:{free_port()}",
                    "--status-interval",
                    str(args.status_interval),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                print("operator started; waiting for every ApiKey to be Ready ...", flush=True)
                db = redis.Redis.from_url(redis_server.url)
                cold = cold_start(kube, db, cold_ns, args.keys, process, started, args.deadline)
                print("measuring kubectl apply -> policy latency ...", flush=True)
                latency = policy_latency(kube, db, latency_ns, args.samples)
                peak_kib = memory_kib(process.pid, "VmHWM")
                settled_kib = memory_kib(process.pid, "VmRSS")
                connections = len(list(Path(f"/proc/{process.pid}/fd").iterdir()))
            finally:
                process.terminate()
                process.wait(timeout=30)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "teams": args.teams,
        "status_interval": args.status_interval,
        "cold_start": cold,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "rss_at_end_mib": round(settled_kib / 1024, 1),
        "open_fds_at_end": connections,
        "policy_latency": latency,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "operator.json").write_text(json.dumps(report, indent=2) + "\n")
    page = markdown(report)
    (RESULTS / "operator.md").write_text(page)
    print(page)


if __name__ == "__main__":
    main()
