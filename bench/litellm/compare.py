"""llmquota's sidecar beside LiteLLM's proxy: same machine, same run, same fake upstream.

    .venv/bin/python bench/litellm/compare.py           # the full run, under 10 min on 2 cores
    .venv/bin/python bench/litellm/compare.py --quick   # a smoke run while developing

Installs LiteLLM's proxy into its own venv when needed (install.sh), starts the fake
upstream, then each system in turn -- M processes sharing a Redis of its own, the same
keys -- and measures with its own load generator (loadgen.py), loopback only:

1. overhead over a direct call to the fake upstream (p50, p99) and requests per second,
   at 1, 16 and 128 concurrent clients, streaming and not, with a key that has a budget
   and an rpm limit too high to refuse;
2. budget overshoot: clients over 1 and M processes spending against one small budget,
   final spend divided by the budget;
3. reset precision: how long after a budget window's boundary the first request is
   admitted.

Prints a table (llmquota/LiteLLM ratios beside the absolute figures) and writes
bench/results/litellm-comparison.json and .md. docs/litellm-comparison.md explains what
of LiteLLM runs here and what cannot.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _use_project_python() -> None:
    """Re-run under the project's venv when started with a python that lacks its packages."""
    try:
        import aiohttp  # noqa: F401, PLC0415

        import llmquota.store  # noqa: F401, PLC0415
    except ImportError:
        venv_python = REPO / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.executable) != venv_python:
            os.execv(venv_python, [str(venv_python), *sys.argv])
        raise


_use_project_python()
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from bench.litellm import loadgen, systems  # noqa: E402
from bench.litellm.systems import MODEL, KeySpec  # noqa: E402

RESULTS = REPO / "bench" / "results"

# What every request costs: the fake upstream reports these tokens, and both systems
# price gpt-4o-mini at $0.15 / $0.60 per million input / output tokens.
PROMPT_TOKENS = 10
COMPLETION_TOKENS = 16
NOMINAL_UNIT_COST = PROMPT_TOKENS * 0.15e-6 + COMPLETION_TOKENS * 0.60e-6

# Budgets and limits for keys that must never refuse during the overhead runs.
ROOMY_BUDGET = 1_000_000.0
ROOMY_RPM = 100_000_000
# The overshoot budget, in requests: a key may spend 100.5 requests' worth. A system
# that admits while spend < budget (llmquota's contract) ends at 101/100.5 = 1.005; one
# that also counts the request's own estimate (LiteLLM's reservation) at 100/100.5.
OVERSHOOT_BUDGET_REQUESTS = 100.5


@dataclass(frozen=True)
class Plan:
    """How much to measure; `--quick` shrinks everything for a smoke run."""

    concurrencies: tuple[int, ...] = (1, 16, 128)
    cell_seconds: float = 5.0
    warmup_seconds: float = 1.0
    max_requests_per_cell: int = 30_000
    overshoot_processes: tuple[int, ...] = (1, 4)
    overshoot_clients: int = 128
    overshoot_seconds: float = 30.0
    reset_window_s: int = 2
    reset_trials: int = 5
    reset_poll_interval_s: float = 0.001


QUICK = Plan(
    concurrencies=(1, 16),
    cell_seconds=1.0,
    warmup_seconds=0.2,
    overshoot_processes=(1, 2),
    overshoot_clients=16,
    reset_trials=2,
)


def request_body(*, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello"}],
        # Caps the reply at what the fake upstream generates anyway, so that an estimate
        # of the request's cost made before it is sent (LiteLLM reserves one) is its cost.
        "max_tokens": COMPLETION_TOKENS,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


# ---------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 1024 / 1024
    revision = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        # Other work on the machine skews every figure; the load averages say how much.
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "os": platform.platform(),
        "proxies_pinned_to_core_0": systems.pinning()
        and os.sched_getaffinity(0) != set(range(os.cpu_count() or 1)),
        "python": platform.python_version(),
        "llmquota_revision": revision or "unknown",
    }


# ---------------------------------------------------------------- measurements


def overhead_row(result: loadgen.LoadResult) -> dict[str, Any]:
    return {
        "p50_ms": result.p(0.50) * 1000,
        "p99_ms": result.p(0.99) * 1000,
        "rps": result.rps,
        "served": result.served,
        "statuses": dict(result.statuses),
    }


async def measure_overhead(
    targets: dict[str, tuple[str, str]], plan: Plan
) -> dict[str, list[dict[str, Any]]]:
    """Latency and throughput per (stream, concurrency) for each target: name -> (URL, key).

    Targets take turns cell by cell, so that whatever else loads the machine meanwhile
    (other builds share these 2 cores) falls on all of them alike.
    """
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    async with loadgen.open_session(max(plan.concurrencies)) as session:
        for stream in (False, True):
            for concurrency in plan.concurrencies:
                for name, (base, key) in targets.items():
                    result = await loadgen.closed_loop(
                        session,
                        [f"{base}/v1/chat/completions"],
                        key,
                        request_body(stream=stream),
                        concurrency=concurrency,
                        seconds=plan.cell_seconds,
                        max_requests=plan.max_requests_per_cell,
                        warmup_seconds=plan.warmup_seconds,
                    )
                    row = {"stream": stream, "concurrency": concurrency, **overhead_row(result)}
                    print(
                        f"  {name:8} {'stream' if stream else 'plain ':6} x{concurrency:<4}"
                        f" p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms"
                        f"  {row['rps']:7.0f} rps  {dict(result.statuses)}",
                        flush=True,
                    )
                    rows[name].append(row)
    return rows


async def measure_unit_cost(base: str, key: str) -> float | None:
    """One request's cost as the system itself charged it (None when it does not say).

    LiteLLM names it in `x-litellm-response-cost`; llmquota tells the remaining budget
    on every response, so one request's cost is the drop between two consecutive ones.
    """
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    seen: list[dict[str, str]] = []
    async with loadgen.open_session(1) as session:
        for _ in range(2):
            async with session.post(
                f"{base}/v1/chat/completions", data=request_body(stream=False), headers=headers
            ) as response:
                await response.read()
                seen.append(dict(response.headers))
    reported = _float(seen[-1].get("x-litellm-response-cost"))
    if reported is not None:
        return reported
    before, after = (_float(h.get("x-llmquota-budget-remaining")) for h in seen)
    if before is not None and after is not None and before > after:
        return before - after
    return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


async def measure_overshoot(
    urls: Sequence[str], key: str, budget: float, unit_cost: float, processes: int, plan: Plan
) -> dict[str, Any]:
    async with loadgen.open_session(plan.overshoot_clients) as session:
        result = await loadgen.spend_until_refused(
            session,
            [f"{base}/v1/chat/completions" for base in urls[:processes]],
            key,
            request_body(stream=False),
            clients=plan.overshoot_clients,
            seconds=plan.overshoot_seconds,
        )
    spend = result.served * unit_cost
    return {
        "processes": processes,
        "clients": plan.overshoot_clients,
        "budget_usd": budget,
        "unit_cost_usd": unit_cost,
        "served": result.served,
        "spend_usd": spend,
        "spend_over_budget": spend / budget,
        "refusals": dict(result.refusals),
        "clients_never_refused": result.unfinished_clients,
        "seconds": result.seconds,
    }


async def measure_reset(base: str, spec: KeySpec, plan: Plan) -> dict[str, Any]:
    assert spec.anchor is not None
    assert spec.budget_duration_s is not None
    async with loadgen.open_session(1) as session:
        trials = await loadgen.reset_delays(
            session,
            f"{base}/v1/chat/completions",
            spec.key,
            request_body(stream=False),
            anchor_s=spec.anchor.timestamp(),
            window_s=spec.budget_duration_s,
            trials=plan.reset_trials,
            poll_interval_s=plan.reset_poll_interval_s,
        )
    delays = [trial.delay_s * 1000 for trial in trials if trial.delay_s is not None]
    refused = [trial.last_refused_s * 1000 for trial in trials if trial.last_refused_s is not None]
    return {
        "window_s": spec.budget_duration_s,
        "poll_interval_ms": plan.reset_poll_interval_s * 1000,
        "trials": [asdict(trial) for trial in trials],
        "admitted_trials": len(delays),
        "delay_median_ms": statistics.median(delays) if delays else None,
        "delay_max_ms": max(delays) if delays else None,
        "delay_min_ms": min(delays) if delays else None,
        "last_refused_median_ms": statistics.median(refused) if refused else None,
    }


# ---------------------------------------------------------------- one system


@dataclass(frozen=True)
class Keys:
    overhead: KeySpec
    calibration: KeySpec
    overshoot: dict[int, KeySpec]
    reset: KeySpec

    def all(self) -> list[KeySpec]:
        return [self.overhead, self.calibration, *self.overshoot.values(), self.reset]


def make_keys(plan: Plan) -> Keys:
    # Reset windows are cut from the key's creation (llmquota: creationTimestamp), set
    # here on a whole second so the boundaries are known to the load generator.
    anchor = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return Keys(
        overhead=KeySpec(
            "bench-overhead", "sk-bench-overhead-0000000000000000", ROOMY_BUDGET, ROOMY_RPM
        ),
        calibration=KeySpec(
            "bench-calibration", "sk-bench-calibration-00000000000", ROOMY_BUDGET, ROOMY_RPM
        ),
        overshoot={
            processes: KeySpec(
                f"bench-overshoot-{processes}",
                f"sk-bench-overshoot-{processes}-000000000000",
                max_budget=OVERSHOOT_BUDGET_REQUESTS * NOMINAL_UNIT_COST,
                rpm=ROOMY_RPM,
            )
            for processes in plan.overshoot_processes
        },
        reset=KeySpec(
            "bench-reset",
            "sk-bench-reset-000000000000000000",
            # Less than one request: the first request of a window uses it up.
            max_budget=NOMINAL_UNIT_COST / 1000,
            rpm=ROOMY_RPM,
            budget_duration_s=plan.reset_window_s,
            anchor=anchor,
        ),
    )


StartSystem = Callable[..., contextlib.AbstractContextManager[list[str]]]


@dataclass(frozen=True)
class System:
    name: str
    start: StartSystem
    # Why reset precision cannot be measured on this system here, or None.
    reset_unmeasurable: str | None


LITELLM_NO_RESET = (
    "not measurable here: LiteLLM resets budgets in its ResetBudgetJob, which finds the "
    "keys whose budget_reset_at has passed in its database (every 597-605 s by default), "
    "and no database can run here (Prisma's engines cannot be fetched)"
)


async def measure_budgets(
    system: System, urls: list[str], keys: Keys, plan: Plan
) -> dict[str, Any]:
    """Unit cost, overshoot and reset precision of one system."""
    measured = await measure_unit_cost(urls[0], keys.calibration.key)
    unit_cost = measured if measured is not None else NOMINAL_UNIT_COST
    overshoot = []
    for processes, spec in keys.overshoot.items():
        print(f"  {system.name}: overshoot over {processes} process(es)", flush=True)
        row = await measure_overshoot(urls, spec.key, spec.max_budget, unit_cost, processes, plan)
        print(
            f"    served {row['served']}, spend/budget {row['spend_over_budget']:.3f},"
            f" refusals {row['refusals']}",
            flush=True,
        )
        overshoot.append(row)
    reset: dict[str, Any]
    if system.reset_unmeasurable is not None:
        reset = {"unmeasurable": system.reset_unmeasurable}
    else:
        print(f"  {system.name}: reset precision", flush=True)
        reset = await measure_reset(urls[0], keys.reset, plan)
        delays = [_fmt(t["delay_s"] and t["delay_s"] * 1000, 1) for t in reset["trials"]]
        print(f"    delays (ms): {delays}", flush=True)
    return {
        "unit_cost_usd": {"measured": measured, "nominal": NOMINAL_UNIT_COST},
        "overshoot": overshoot,
        "reset": reset,
    }


# ---------------------------------------------------------------- the run


@contextlib.contextmanager
def run_folder(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="llmquota-bench-litellm-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def run(plan: Plan, folder: Path, only: set[str]) -> dict[str, Any]:
    keys = make_keys(plan)
    started = time.monotonic()
    report: dict[str, Any] = {
        "machine": machine(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": asdict(plan),
        "request": {
            "model": MODEL,
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "nominal_unit_cost_usd": NOMINAL_UNIT_COST,
        },
        "upstream": "llmquota fake-upstream",
        "systems": {},
        "unavailable": {},
    }
    candidates = [
        System("LiteLLM", systems.litellm_proxies, LITELLM_NO_RESET),
        System("llmquota", systems.llmquota_sidecars, None),
    ]
    availability = {"LiteLLM": systems.litellm_available, "llmquota": systems.llmquota_available}
    chosen: list[System] = []
    for system in candidates:
        if system.name.lower() not in only:
            continue
        why_not = availability[system.name]()
        if why_not is None:
            chosen.append(system)
        else:
            print(f"{system.name}: skipped, {why_not}", flush=True)
            report["unavailable"][system.name] = why_not
    if any(system.name == "LiteLLM" for system in chosen):
        report["machine"]["litellm_version"] = systems.litellm_version(systems.litellm_python())
    processes = max(plan.overshoot_processes)
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(
            systems.fake_upstream(
                folder, prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS
            )
        )
        urls: dict[str, list[str]] = {}
        for system in chosen:
            print(f"{system.name}: starting {processes} process(es)", flush=True)
            system_folder = folder / system.name.lower()
            redis = stack.enter_context(systems.redis_server(system_folder / "redis"))
            urls[system.name] = stack.enter_context(
                system.start(
                    system_folder, upstream=upstream, redis=redis, keys=keys.all(), count=processes
                )
            )
        print(f"overhead (upstream: {report['upstream']})", flush=True)
        targets = {"direct": (upstream, keys.overhead.key)}
        targets |= {name: (bases[0], keys.overhead.key) for name, bases in urls.items()}
        overhead = await measure_overhead(targets, plan)
        report["direct"] = overhead.pop("direct")
        for system in chosen:
            budgets = await measure_budgets(system, urls[system.name], keys, plan)
            report["systems"][system.name] = {"overhead": overhead[system.name], **budgets}
    report["seconds"] = round(time.monotonic() - started, 1)
    report["machine"]["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    return report


# ---------------------------------------------------------------- the table


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0 or numerator != numerator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def markdown(report: dict[str, Any]) -> str:
    machine_info = report["machine"]
    found = report["systems"]
    lite, mine = found.get("LiteLLM"), found.get("llmquota")
    placement = (
        "the proxies on core 0, the load generator, fake upstream and Redis on the other"
        if machine_info["proxies_pinned_to_core_0"]
        else f"everything shares the {machine_info['cores']} cores"
    )
    lines = [
        "# llmquota beside LiteLLM's proxy",
        "",
        f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores,"
        f" {machine_info['memory_gib']} GiB; Python {machine_info['python']};"
        f" LiteLLM {machine_info.get('litellm_version', 'n/a')}"
        f" (no database: keys from a custom-auth hook, see docs/litellm-comparison.md);"
        f" llmquota {machine_info['llmquota_revision']}. Upstream: {report['upstream']},"
        f" {report['request']['prompt_tokens']} + {report['request']['completion_tokens']}"
        f" tokens a reply, no added latency. Everything on loopback; {placement}."
        f" {report['when']}, load"
        f" average {machine_info['load_average_at_start'][0]} at the start,"
        f" {machine_info['load_average_at_end'][0]} at the end ({report['seconds']:.0f} s).",
        "",
    ]
    for name, why in report["unavailable"].items():
        lines += [f"**{name} not measured**: {why}.", ""]
    lines += [
        "Overhead = proxy latency minus direct latency at the same percentile (ms);"
        " rps = requests per second; ratio = llmquota / LiteLLM (below 1: llmquota"
        " adds less, or serves fewer rps).",
        "",
        "| mode | clients | direct p50 / p99 | direct rps | LiteLLM overhead p50 / p99"
        " | LiteLLM rps | llmquota overhead p50 / p99 | llmquota rps"
        " | ratio overhead p50 / p99 | ratio rps | not 200: LiteLLM / llmquota |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(system: dict[str, Any] | None, index: int) -> dict[str, Any] | None:
        return system["overhead"][index] if system else None

    def rps(row: dict[str, Any] | None) -> float | None:
        return row["rps"] if row else None

    def failed(row: dict[str, Any] | None) -> str:
        if row is None:
            return "n/a"
        count = sum(n for status, n in row["statuses"].items() if status != "200")
        kinds = ", ".join(sorted(status for status in row["statuses"] if status != "200"))
        return f"{count} ({kinds})" if count else "0"

    for index, direct in enumerate(report["direct"]):
        lite_row, mine_row = cell(lite, index), cell(mine, index)

        def over(
            row: dict[str, Any] | None, key: str, direct: dict[str, Any] = direct
        ) -> float | None:
            return row[key] - direct[key] if row else None

        lines.append(
            f"| {'stream' if direct['stream'] else 'plain'} | {direct['concurrency']}"
            f" | {_fmt(direct['p50_ms'])} / {_fmt(direct['p99_ms'])} | {_fmt(direct['rps'], 0)}"
            f" | {_fmt(over(lite_row, 'p50_ms'))} / {_fmt(over(lite_row, 'p99_ms'))}"
            f" | {_fmt(rps(lite_row), 0)}"
            f" | {_fmt(over(mine_row, 'p50_ms'))} / {_fmt(over(mine_row, 'p99_ms'))}"
            f" | {_fmt(rps(mine_row), 0)}"
            f" | {_ratio(over(mine_row, 'p50_ms'), over(lite_row, 'p50_ms'))}"
            f" / {_ratio(over(mine_row, 'p99_ms'), over(lite_row, 'p99_ms'))}"
            f" | {_ratio(rps(mine_row), rps(lite_row))}"
            f" | {failed(lite_row)} / {failed(mine_row)} |"
        )
    lines += [
        "",
        f"Budget overshoot: clients spend against one budget of"
        f" {OVERSHOOT_BUDGET_REQUESTS} requests' cost, each until its first refusal;"
        " final spend / budget (1.00 = exact; the contract allows one request over:"
        f" {(OVERSHOOT_BUDGET_REQUESTS + 1) / OVERSHOOT_BUDGET_REQUESTS:.3f}).",
        "",
        "| processes | clients | LiteLLM spend / budget (served)"
        " | llmquota spend / budget (served) | ratio |",
        "|---|---|---|---|---|",
    ]
    lite_over = {row["processes"]: row for row in lite["overshoot"]} if lite else {}
    mine_over = {row["processes"]: row for row in mine["overshoot"]} if mine else {}
    for processes in sorted(set(lite_over) | set(mine_over)):
        a, b = lite_over.get(processes), mine_over.get(processes)
        clients = (a or b or {}).get("clients")

        def ratio_of(row: dict[str, Any] | None) -> float | None:
            return row["spend_over_budget"] if row else None

        def spent(row: dict[str, Any] | None) -> str:
            return f"{row['spend_over_budget']:.3f} ({row['served']})" if row else "n/a"

        lines.append(
            f"| {processes} | {clients} | {spent(a)} | {spent(b)}"
            f" | {_ratio(ratio_of(b), ratio_of(a))} |"
        )
    lines += [
        "",
        "Reset precision: from a budget window's boundary to the answer of the first"
        " request admitted after it (ms), a client polling every"
        f" {report['plan']['reset_poll_interval_s'] * 1000:g} ms after each answer. The"
        " reset happened after the last refused request was sent (last column) and"
        " before that answer: an upper bound, as fine as one round trip.",
        "",
        "| system | window | trials admitted | median | max | last refusal before it (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("LiteLLM", "llmquota"):
        reset = found.get(name, {}).get("reset")
        if reset is None:
            continue
        if "unmeasurable" in reset:
            lines.append(f"| {name} | | | {reset['unmeasurable']} | | |")
            continue
        lines.append(
            f"| {name} | {reset['window_s']} s"
            f" | {reset['admitted_trials']}/{len(reset['trials'])}"
            f" | {_fmt(reset['delay_median_ms'], 1)} | {_fmt(reset['delay_max_ms'], 1)}"
            f" | {_fmt(reset['last_refused_median_ms'], 1)} |"
        )
    lines += [
        "",
        "Reproduce: `.venv/bin/python bench/litellm/compare.py`; what of LiteLLM runs here"
        " and what cannot: docs/litellm-comparison.md.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--systems", default="litellm,llmquota", help="comma-separated: litellm, llmquota"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not give the proxies a core of their own"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "litellm-comparison",
        help="results path without suffix (.json and .md are written)",
    )  # fmt: skip
    parser.add_argument(
        "--render", type=Path, metavar="JSON",
        help="only print the table of an earlier run's JSON, measuring nothing",
    )  # fmt: skip
    args = parser.parse_args()
    if args.render is not None:
        print(markdown(json.loads(args.render.read_text())), end="")
        return 0
    plan = QUICK if args.quick else Plan()
    only = {name.strip().lower() for name in args.systems.split(",")}
    try:
        import uvloop  # noqa: PLC0415

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    if not args.no_pin:
        systems.pin_others()
    with run_folder(args.keep_logs) as folder:
        report = asyncio.run(run(plan, folder, only))
    table = markdown(report)
    print()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(table)
    print(f"wrote {args.output.with_suffix('.json')} and {args.output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
