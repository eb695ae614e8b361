"""Benchmark: llmquota's sidecar beside its floors, in one run, with one load generator.

The sidecar is on every request's path, so its CPU per request decides its cost and its
latency under load. This run puts that figure beside the physical floor in Python (a bare
aiohttp + uvloop pass-through proxy, bench/bare_proxy.py), the same plus the two Redis
round trips an admission and a settlement need at the least, and LiteLLM's proxy:

    direct          wrk -> fake upstream
    bare            wrk -> bare proxy -> fake upstream
    bare+2 EVALSHA  the same, two EVALSHA round trips per request (redis-py + hiredis)
    bare+2 fast     the same two through llmquota.store.fast_path (pipelined, hiredis)
    llmquota        the sidecar, a key with a 30d budget and an rpm limit (2 scopes)
    llmquota 5      the sidecar with 5 scopes: global, team, member, key, end user
    litellm         LiteLLM's proxy, custom-auth hook, no database (bench/litellm)

Every proxy runs on core 0; wrk (Debian's, with a Lua script for the POST body), the fake
upstream and Redis on core 1. For each system, whole and streamed answers (chat
completions, max_tokens 16): CPU per request (user + system time of the proxy's processes
from /proc over a run of sequential requests), then requests/s and p50/p99 at 16 clients.
Rounds are interleaved (every system once per round), and each figure is the best of the
rounds: other work on the machine only ever adds to it.

    .venv/bin/python bench/floors.py [--rounds 5] [--seconds 3] [--no-litellm]

Writes bench/results/floors.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from bench.litellm import systems  # noqa: E402

RESULTS = REPO / "bench" / "results"
MODEL = systems.MODEL
KEY = "sk-bench-floor-0001"
END_USER = "customer-1"
CLIENTS = 16
LOAD_CORE, PROXY_CORE = "1", "0"
PROMPT = "Say hello in five words."


@dataclass
class Figures:
    """One system's best figures for one kind of answer."""

    cpu_ms_per_request: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    rss_mib: float


def body(*, stream: bool, user: bool) -> str:
    request: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
        "stream": stream,
    }
    if user:
        request["user"] = END_USER
    return json.dumps(request)


def wrk_script(folder: Path, *, stream: bool, user: bool) -> Path:
    """The Lua file that makes wrk send our POST."""
    lua = "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(body(stream=stream, user=user))}",
            'wrk.headers["Content-Type"] = "application/json"',
            f'wrk.headers["Authorization"] = "Bearer {KEY}"',
        ]
    )
    path = folder / f"post-{'stream' if stream else 'whole'}-{'user' if user else 'plain'}.lua"
    path.write_text(lua + "\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _found(pattern: str, text: str) -> str:
    """The first group of `pattern` in `text`; wrk's output format is part of the bench."""
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        msg = f"no {pattern!r} in:\n{text}"
        raise RuntimeError(msg)
    return match.group(1)


def _ms(text: str) -> float:
    number, unit = _found(r"^([\d.]+)(us|ms|s)$", text), _found(r"^[\d.]+(us|ms|s)$", text)
    return float(number) * _UNITS[unit]


def wrk(
    url: str, script: Path, *, clients: int, seconds: float, pinned: bool = True
) -> dict[str, float]:
    """One wrk run (on the load core when `pinned`); requests, requests/s, p50 and p99 ms."""
    command = [
        "wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s",
        "--latency", "-s", str(script), url,
    ]  # fmt: skip
    if pinned:
        command = ["taskset", "-c", LOAD_CORE, *command]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        msg = f"wrk saw failures against {url}:\n{output}"
        raise RuntimeError(msg)
    return {
        "requests": float(_found(r"(\d+) requests in", output)),
        "requests_per_s": float(_found(r"Requests/sec:\s+([\d.]+)", output)),
        "p50_ms": _ms(_found(r"^\s+50%\s+(\S+)$", output)),
        "p99_ms": _ms(_found(r"^\s+99%\s+(\S+)$", output)),
    }


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (LiteLLM's CLI runs its server in a child)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending += children.get(current, [])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its descendants so far."""
    ticks = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    total_kib = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{member}/status").read_text()
            total_kib += int(_found(r"VmRSS:\s+(\d+)", status))
    return total_kib / 1024


@dataclass
class System:
    name: str
    base: str
    pid: int  # the process whose CPU is the system's (0: none, for `direct`)
    user: bool = False  # the body carries `user` (the end-user scope)


def measure(system: System, script: Path, seconds: float) -> Figures:
    url = f"{system.base}/v1/chat/completions"
    wrk(url, script, clients=4, seconds=1)  # warm connections, caches, policies
    before = cpu_seconds(system.pid) if system.pid else 0.0
    sequential = wrk(url, script, clients=1, seconds=seconds)
    spent = (cpu_seconds(system.pid) - before) if system.pid else 0.0
    loaded = wrk(url, script, clients=CLIENTS, seconds=seconds)
    return Figures(
        cpu_ms_per_request=1e3 * spent / sequential["requests"],
        requests_per_s=loaded["requests_per_s"],
        p50_ms=loaded["p50_ms"],
        p99_ms=loaded["p99_ms"],
        rss_mib=rss_mib(system.pid) if system.pid else 0.0,
    )


def best(runs: list[Figures]) -> Figures:
    return Figures(
        cpu_ms_per_request=min(r.cpu_ms_per_request for r in runs),
        requests_per_s=max(r.requests_per_s for r in runs),
        p50_ms=min(r.p50_ms for r in runs),
        p99_ms=min(r.p99_ms for r in runs),
        rss_mib=max(r.rss_mib for r in runs),
    )


def five_scope_manifests() -> str:
    """A key in a team, as a team member, with an end-user budget and a global budget."""
    budget = {"maxBudget": 1_000_000, "budgetDuration": "30d"}
    documents = [
        {"kind": "Budget", "metadata": {"name": "global"}, "spec": budget},
        {"kind": "Budget", "metadata": {"name": "per-customer"}, "spec": budget},
        {
            "kind": "Team",
            "metadata": {"name": "floor-team"},
            "spec": {
                "budget": budget,
                "endUserBudgetRef": {"name": "per-customer"},
                "members": [{"user": "ishaan", "maxBudgetInTeam": 1_000_000}],
            },
        },
        {
            "kind": "ApiKey",
            "metadata": {"name": "floor-key"},
            "spec": {
                "team": "floor-team",
                "user": "ishaan",
                "secretName": "floor-key",
                "budget": budget,
                "rateLimit": {"rpm": 100_000_000},
            },
        },
    ]
    text = [json.dumps({"apiVersion": "llmquota.dev/v1alpha1", **doc}) for doc in documents]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "floor-key"}}
    text.append(json.dumps({**secret, "stringData": {"key": KEY}}))
    return "\n---\n".join(text) + "\n"


def pid_listening_on(port: int) -> int:
    """The process that listens on 127.0.0.1:`port` (from /proc/net/tcp and the fds)."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(entry) in inodes:
                return int(entry.parts[2])
    msg = f"nothing listens on 127.0.0.1:{port}"
    raise RuntimeError(msg)


@contextlib.contextmanager
def started(command: list[str], port: int, ready_path: str, log: Path) -> Iterator[System]:
    """A proxy on the proxy core, listening on `port`; yields it once ready, stops it after."""
    base = f"http://127.0.0.1:{port}"
    pinned = ["taskset", "-c", PROXY_CORE, *command]
    with systems.processes([pinned], [base + ready_path], [log]):
        yield System(log.stem, base, pid_listening_on(port))


def sidecar_command(folder: Path, upstream: str, redis: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "llmquota.cli", "sidecar", "--listen", f"127.0.0.1:{port}",
        "--upstream", upstream, "--upstream-key-file", str(folder.parent / "upstream-key"),
        "--redis", redis, "--manifests", str(folder), *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def all_systems(work: Path, with_litellm: bool) -> Iterator[list[System]]:
    with contextlib.ExitStack() as stack:
        redis_host, redis_port = stack.enter_context(systems.redis_server(work / "redis"))
        redis = f"redis://{redis_host}:{redis_port}/0"
        upstream = stack.enter_context(
            systems.fake_upstream(work, prompt_tokens=12, completion_tokens=16)
        )
        found = [System("direct", upstream, 0)]
        bare = [sys.executable, str(REPO / "bench" / "bare_proxy.py"), "--upstream", upstream]
        for name, extra in (
            ("bare", []),
            ("bare+2 EVALSHA", ["--redis", redis]),
            ("bare+2 fast", ["--redis", redis, "--fast-path"]),
        ):
            port = systems.free_port()
            command = [*bare, "--listen", f"127.0.0.1:{port}", *extra]
            log = work / f"{name.replace(' ', '-').replace('+', '-')}.log"
            proxy = stack.enter_context(started(command, port, "/v1/models", log))
            found.append(System(name, proxy.base, proxy.pid))
        (work / "upstream-key").write_text("sk-upstream-bench\n")
        two = work / "two-scopes"
        five = work / "five-scopes"
        spec = systems.KeySpec("floor-key", KEY, 1_000_000, 100_000_000, 30 * 86_400)
        for folder, name, manifests, extra, user in (
            (two, "llmquota", systems.llmquota_manifests([spec]), [], False),
            (
                five,
                "llmquota 5 scopes",
                five_scope_manifests(),
                ["--global-budget", "default/global"],
                True,
            ),
        ):
            folder.mkdir()
            (folder / "keys.yaml").write_text(manifests)
            port = systems.free_port()
            command = sidecar_command(folder, upstream, redis, port, *extra)
            proxy = stack.enter_context(
                started(command, port, "/readyz", work / f"{folder.name}.log")
            )
            found.append(System(name, proxy.base, proxy.pid, user))
        if with_litellm:
            litellm_spec = systems.KeySpec("floor-key", KEY, 1_000_000, 100_000_000)
            (base,) = stack.enter_context(
                systems.litellm_proxies(
                    work / "litellm",
                    upstream=upstream,
                    redis=(redis_host, redis_port),
                    keys=[litellm_spec],
                    count=1,
                )
            )
            port = int(base.rpartition(":")[2])
            found.append(System("litellm", base, pid_listening_on(port)))
        yield found


def table(results: dict[str, dict[str, Figures]]) -> str:
    bare, direct = results["bare"], results["direct"]["whole"]
    lines = [
        "| system | CPU ms/request whole / streamed | x bare | req/s at 16 whole / streamed "
        "| x bare | p50 / p99 ms at 16, whole | p50 overhead ms | RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        whole, streamed = figures["whole"], figures["streamed"]
        cpu = f"{whole.cpu_ms_per_request:.3f} / {streamed.cpu_ms_per_request:.3f}"
        rps = f"{whole.requests_per_s:,.0f} / {streamed.requests_per_s:,.0f}"
        if name == "direct":
            cpu_ratio = rps_ratio = "-"
            cpu = "- / -"
        else:
            cpu_ratio = (
                f"{whole.cpu_ms_per_request / bare['whole'].cpu_ms_per_request:.2f} / "
                f"{streamed.cpu_ms_per_request / bare['streamed'].cpu_ms_per_request:.2f}"
            )
            rps_ratio = (
                f"{whole.requests_per_s / bare['whole'].requests_per_s:.2f} / "
                f"{streamed.requests_per_s / bare['streamed'].requests_per_s:.2f}"
            )
        latency = f"{whole.p50_ms:.2f} / {whole.p99_ms:.2f}"
        overhead = "-" if name == "direct" else f"{whole.p50_ms - direct.p50_ms:.2f}"
        rss = "-" if name == "direct" else f"{whole.rss_mib:.0f}"
        lines.append(
            f"| {name} | {cpu} | {cpu_ratio} | {rps} | {rps_ratio} | {latency} | {overhead} "
            f"| {rss} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (its install)")
    parser.add_argument(
        "--only", default="", metavar="NAME,...", help="measure only these systems (and bare)"
    )
    parser.add_argument("--out", default="floors", help="results file stem (bench/results/)")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("bench/floors.py needs wrk and taskset: apt-get install wrk util-linux")
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench/floors.py needs two cores: the proxies on one, the load on the other")
        return 2
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # what this process starts runs off core 0
    load_at_start = os.getloadavg()[0]
    runs: dict[str, dict[str, list[Figures]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="llmquota-floors-") as tmp,
        all_systems(Path(tmp), not args.no_litellm) as found,
    ):
        work = Path(tmp)
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        measured = [s for s in found if not wanted or s.name in wanted | {"bare", "direct"}]
        for round_index in range(args.rounds):
            for system in measured:
                for kind, stream in (("whole", False), ("streamed", True)):
                    script = wrk_script(work, stream=stream, user=system.user)
                    figures = measure(system, script, args.seconds)
                    runs.setdefault(system.name, {}).setdefault(kind, []).append(figures)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    results = {name: {kind: best(r) for kind, r in kinds.items()} for name, kinds in runs.items()}
    load_at_end = os.getloadavg()[0]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    heading = (
        f"# Floors: CPU per request beside a bare aiohttp proxy\n\n"
        f"`python bench/floors.py --rounds {args.rounds} --seconds {args.seconds:g}`, "
        f"{time.strftime('%Y-%m-%d')}, {machine}, load average {load_at_start:.2f} at start, "
        f"{load_at_end:.2f} at end. Best of {args.rounds} interleaved rounds; proxies on "
        f"core 0, wrk, fake upstream and Redis on core 1; chat completions, max_tokens 16.\n"
    )
    markdown = f"{heading}\n{table(results)}\n"
    print(markdown)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(markdown)
    serial = {
        "load_average_1m_start": load_at_start,
        "load_average_1m_end": load_at_end,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "results": {n: {k: asdict(f) for k, f in kinds.items()} for n, kinds in results.items()},
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(serial, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
