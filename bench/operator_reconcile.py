"""Benchmark: how fast the operator turns `kubectl apply` into enforcement, and at scale.

1. Cold start: 2,000 ApiKeys in 200 Teams exist before the operator starts; time from
   starting `llmquota operator` to every ApiKey Ready=True (Secrets generated, policies
   in Redis, statuses written), and the operator's peak memory (VmHWM, peak RSS).
2. Enforcement latency, measured while the status sync runs over those keys: a Budget
   (referenced by a Team, used by a key) is lowered to 0, and the clock runs from the
   apply until (a) the key's policy in Redis carries the new maxBudget and (b) a real
   `llmquota sidecar` (reading the policies the operator writes, in front of
   `llmquota fake-upstream`), polled with a request every ~10 ms, answers 402. The
   Budget is then raised again and the sidecar polled until it admits. The apply is
   done two ways: `kubectl apply` (a process per apply: kubectl's own start-up counts)
   and a merge PATCH over one persistent HTTPS connection (what a controller or GitOps
   tool holding a client does).

Runs against a real kube-apiserver + etcd from the test bed (testbed/build.sh) and a
real redis-server.

    .venv/bin/python bench/operator_reconcile.py [--scale 2000:200 --scale 20:2]
        [--samples 40] [--before old-operator.json]

Each scale gets a fresh API server, Redis and operator (default: 2,000 keys in 200
Teams, and 20 in 2, what most installations look like). `--before` puts an earlier
result beside this one. Writes bench/results/operator.json and .md. Bounded: gives up
after --deadline seconds.
"""

from __future__ import annotations

import argparse
import base64
import http.client
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
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from llmquota.policy import keyspace
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.kube_apiserver import (
    KubeAPIServer,
    find_binaries,
    run_kube_apiserver,
)
from tests.support.waiting import WaitTimeoutError, wait_until_sync

RESULTS = Path(__file__).parent / "results"
GROUP = "llmquota.dev/v1alpha1"
SCALES = [(2000, 200), (20, 2)]
STATUS_SYNC = "one loop, counters read 100 objects per Redis round trip"
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


Applier = Callable[[int], None]
"""Sets the Budget's maxBudget, one way or another."""


class Sidecar:
    """One keep-alive connection to a sidecar, sending a small chat completion."""

    def __init__(self, port: int, key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.body = json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
             "max_tokens": 5}
        )  # fmt: skip
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def status(self) -> int:
        self.connection.request("POST", "/v1/chat/completions", self.body, self.headers)
        response = self.connection.getresponse()
        response.read()
        return response.status


def kubectl_applier(kube: KubeAPIServer, namespace: str, budget: dict[str, Any]) -> Applier:
    def apply_with_kubectl(max_budget: int) -> None:
        manifest = {**budget, "spec": {"maxBudget": max_budget}}
        kube.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest), check=True)

    return apply_with_kubectl


def api_applier(kube: KubeAPIServer, namespace: str, name: str) -> Applier:
    """A merge PATCH over one persistent HTTPS connection (no process, no handshake)."""
    server = urllib.parse.urlsplit(kube.server)
    connection = http.client.HTTPSConnection(
        server.hostname or "127.0.0.1", server.port, context=kube.ssl_context(), timeout=10
    )
    path = f"/apis/{GROUP}/namespaces/{namespace}/budgets/{name}"
    headers = {
        "Authorization": f"Bearer {kube.token}",
        "Content-Type": "application/merge-patch+json",
    }

    def apply_with_api(max_budget: int) -> None:
        patch = json.dumps({"spec": {"maxBudget": max_budget}})
        connection.request("PATCH", path, patch, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"PATCH {path}: {response.status} {answer[:300]!r}")

    return apply_with_api


def team_max_nanos(db: redis.Redis, key_hash: str) -> int | None:
    raw = db.get(keyspace.policy_key(key_hash))
    if not raw:
        return None
    policy = ResolvedPolicy.model_validate_json(raw)
    team = next((s for s in policy.scopes if s.kind == "team"), None)
    return team.budget.max_nanos if team and team.budget else None


def _when_enforced(db: redis.Redis, key_hash: str, sidecar: Sidecar) -> dict[str, float]:
    """When (perf_counter) the zero budget reached the policy and the sidecar's 402."""
    seen_at: dict[str, float] = {}

    def both_seen() -> bool:
        now = time.perf_counter()
        if "policy" not in seen_at and team_max_nanos(db, key_hash) == 0:
            seen_at["policy"] = now
        if "refusal" not in seen_at and sidecar.status() == 402:
            seen_at["refusal"] = now
        return len(seen_at) == 2

    wait_until_sync(both_seen, 30, poll_s=0.01, what="the policy and the sidecar's 402")
    return seen_at


def enforcement_latency(
    db: redis.Redis, key_hash: str, sidecar: Sidecar, apply: Applier, samples: int
) -> dict[str, Any]:
    """Per sample: lower the Budget to 0 and time policy-in-Redis and the sidecar's 402."""
    to_policy: list[float] = []
    to_refusal: list[float] = []
    for _ in range(samples):
        apply(1000)
        wait_until_sync(lambda: sidecar.status() == 200, 30, poll_s=0.01, what="admitting again")
        started = time.perf_counter()
        apply(0)
        seen_at = _when_enforced(db, key_hash, sidecar)
        to_policy.append(seen_at["policy"] - started)
        to_refusal.append(seen_at["refusal"] - started)
    return {"samples": samples, "to_policy": summary(to_policy), "to_402": summary(to_refusal)}


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


@contextmanager
def process(argv: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m llmquota.cli ARGV`, once `ready_url` answers; stopped afterwards."""
    with log.open("wb") as output:
        started = subprocess.Popen(
            [sys.executable, "-m", "llmquota.cli", *argv], stdout=output, stderr=subprocess.STDOUT
        )

        def answers() -> bool:
            if started.poll() is not None:
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}")
            url = urllib.parse.urlsplit(ready_url)
            probe = http.client.HTTPConnection(url.hostname or "", url.port, timeout=1)
            try:
                probe.request("GET", url.path)
                return probe.getresponse().status == 200
            except OSError:
                return False
            finally:
                probe.close()

        try:
            try:
                wait_until_sync(answers, 30, poll_s=0.1, what=ready_url)
            except WaitTimeoutError:
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}") from None
            yield started
        finally:
            started.terminate()
            started.wait(timeout=30)


def latency_runs(
    kube: KubeAPIServer,
    db: redis.Redis,
    redis_url: str,
    namespace: str,
    samples: int,
    workdir: Path,
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
    secret = json.loads(
        kube.kubectl("-n", namespace, "get", "secret", "k", "-o", "json", check=True).stdout
    )
    key = base64.b64decode(secret["data"]["key"]).decode()
    upstream_port, sidecar_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    with (
        process(
            ["fake-upstream", "--listen", f"127.0.0.1:{upstream_port}"],
            workdir / "fake-upstream.log",
            f"{upstream}/_fake/requests",
        ),
        process(
            [
                "sidecar",
                "--listen",
                f"127.0.0.1:{sidecar_port}",
                "--redis",
                redis_url,
                "--upstream",
                upstream,
            ],
            workdir / "sidecar.log",
            f"http://127.0.0.1:{sidecar_port}/readyz",
        ),  # fmt: skip
    ):
        sidecar = Sidecar(sidecar_port, key)
        runs = {}
        for method, applier in (
            ("kubectl", kubectl_applier(kube, namespace, budget)),
            ("api", api_applier(kube, namespace, "tier")),
        ):
            print(f"  apply with {method} ...", flush=True)
            runs[method] = enforcement_latency(db, key_hash, sidecar, applier, samples)
    return runs


def wait_key_hash(db: redis.Redis, namespace: str, name: str) -> str:
    def key_hash_of_policy() -> str | None:
        for member in db.smembers(keyspace.POLICY_INDEX):
            key_hash = member.decode() if isinstance(member, bytes) else str(member)
            raw = db.get(keyspace.policy_key(key_hash))
            if (
                raw
                and (p := ResolvedPolicy.model_validate_json(raw)).namespace == namespace
                and p.key_name == name
            ):
                return p.key_hash
        return None

    return wait_until_sync(key_hash_of_policy, 60, what=f"a policy for {namespace}/{name}")


def _runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of a report; an older report (one scale, no "runs") is its own run."""
    runs: list[dict[str, Any]] = report.get("runs") or [report]
    return runs


def _latency_rows(run: dict[str, Any], label: str) -> list[str]:
    cold = run["cold_start"]
    return [
        f"| {cold['keys']} keys, {run['teams']} teams{label} | {method}: {stage} | "
        f"{result[key]['p50_ms']} | {result[key]['p99_ms']} | {result[key]['max_ms']} |"
        for method, result in run["latency"].items()
        for key, stage in (("to_policy", "policy in Redis"), ("to_402", "sidecar answers 402"))
    ]


def _scale_rows(run: dict[str, Any]) -> list[str]:
    cold, keys = run["cold_start"], run["cold_start"]["keys"]
    ready = cold["seconds_to_all_ready"] if cold["all_ready"] else "not reached"
    return [
        f"| {keys} ApiKeys in {run['teams']} Teams: all Ready (s) | {ready} |",
        f"| {keys} ApiKeys: operator peak RSS (MiB) | {run['peak_rss_mib']} |",
        f"| {keys} ApiKeys: operator RSS at the end (MiB) | {run['rss_at_end_mib']} |",
    ]


def markdown(report: dict[str, Any]) -> str:
    machine, runs, before = report["machine"], _runs(report), report.get("before")
    samples = next(iter(runs[0]["latency"].values()))["samples"]
    scale_rows = [row for run in runs for row in _scale_rows(run)]
    latency_rows = [row for run in runs for row in _latency_rows(run, "")]
    before_rows = (
        []
        if before is None
        else [
            "",
            f"Before (measured {before['measured']}, commit {before.get('commit', 'unknown')}, "
            f"{before.get('status_sync', 'a kopf timer per object')}, load average "
            f"{before['machine']['load_average']}, "
            f"{next(iter(_runs(before)[0]['latency'].values()))['samples']} samples):",
            "",
            "| scale | from the apply to ... | p50 | p99 | max |",
            "|---|---|---:|---:|---:|",
            *(row for run in _runs(before) for row in _latency_rows(run, "")),
        ]
    )
    return "\n".join(
        [
            "# Operator benchmark",
            "",
            f"Measured {report['measured']} (commit {report['commit']}) by",
            "`bench/operator_reconcile.py` against a real kube-apiserver + etcd (test bed) and",
            "redis-server on the same machine.",
            "",
            f"- Machine: {machine['cpus']} CPUs (shared with other work; load average "
            f"{machine['load_average']} at the end), Python {machine['python']}",
            "- Operator: `llmquota operator --status-interval "
            f"{report['status_interval']}`, one process per scale; status sync: "
            f"{report['status_sync']}",
            "",
            "| measurement | value |",
            "|---|---:|",
            *scale_rows,
            "",
            f"Lowering a Budget to 0, {samples} times per way of applying, while the status "
            "sync runs over all the keys (ms):",
            "",
            "| scale | from the apply to ... | p50 | p99 | max |",
            "|---|---|---:|---:|---:|",
            *latency_rows,
            *before_rows,
            "",
            "`kubectl` starts a process per apply (its start-up counts); `api` is a merge",
            "PATCH over one persistent HTTPS connection. The sidecar is polled with a request",
            "every ~10 ms. RSS is VmHWM of the operator process.",
            "",
        ]
    )


def run_scale(binaries: Any, keys: int, teams: int, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh API server and Redis; `keys` ApiKeys in `teams` Teams; cold start, latency."""
    tmp = tempfile.mkdtemp(prefix="bench-operator-")
    print(f"{keys} keys in {teams} teams; work directory: {tmp}", flush=True)
    with (
        run_kube_apiserver(binaries, workdir=Path(tmp) / "kube", controller_manager=False) as kube,
        EmbeddedRedis() as redis_server,
    ):
        install_crds(kube, Path(tmp))
        cold_ns, latency_ns = "bench-cold", "bench-latency"
        for namespace in (cold_ns, latency_ns):
            kube.kubectl("create", "namespace", namespace, check=True)
        per_team = keys // teams
        items: list[dict[str, Any]] = [
            {
                "apiVersion": GROUP,
                "kind": "Team",
                "metadata": {"name": f"team-{t}"},
                "spec": {"budget": {"maxBudget": 100, "budgetDuration": "30d"}},
            }
            for t in range(teams)
        ] + [
            {
                "apiVersion": GROUP,
                "kind": "ApiKey",
                "metadata": {"name": f"key-{k}"},
                "spec": {"team": f"team-{k // per_team}", "budget": {"maxBudget": 5}},
            }
            for k in range(keys)
        ]
        print(f"creating {teams} Teams and {keys} ApiKeys ...", flush=True)
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
                cold = cold_start(kube, db, cold_ns, keys, process, started, args.deadline)
                print("measuring apply -> policy -> sidecar refusal ...", flush=True)
                latency = latency_runs(
                    kube, db, redis_server.url, latency_ns, args.samples, Path(tmp)
                )
                peak_kib = memory_kib(process.pid, "VmHWM")
                settled_kib = memory_kib(process.pid, "VmRSS")
                connections = len(list(Path(f"/proc/{process.pid}/fd").iterdir()))
            finally:
                process.terminate()
                process.wait(timeout=30)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "teams": teams,
        "cold_start": cold,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "rss_at_end_mib": round(settled_kib / 1024, 1),
        "open_fds_at_end": connections,
        "latency": latency,
    }


def scale(text: str) -> tuple[int, int]:
    """KEYS:TEAMS, e.g. 2000:200."""
    keys, _, teams = text.partition(":")
    return int(keys), int(teams or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        type=scale,
        action="append",
        help="KEYS:TEAMS, repeatable (default: 2000:200 and 20:2)",
    )
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--status-interval", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=240.0)
    parser.add_argument(
        "--before", type=Path, help="an earlier operator.json, shown beside this run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs)")
    args = parser.parse_args()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("no test bed: run testbed/build.sh (or set KUBEBUILDER_ASSETS)")
    before = json.loads(args.before.read_text()) if args.before else None
    runs = [run_scale(binaries, keys, teams, args) for keys, teams in args.scale or SCALES]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    report = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
        "status_sync": STATUS_SYNC,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "status_interval": args.status_interval,
        "runs": runs,
        "before": before,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "operator.json").write_text(json.dumps(report, indent=2) + "\n")
    page = markdown(report)
    (RESULTS / "operator.md").write_text(page)
    print(page)


if __name__ == "__main__":
    main()
