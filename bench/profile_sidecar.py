"""Where a request's CPU goes: py-spy samples of the sidecar under wrk load, as a table.

Starts Redis, the fake upstream and one llmquota sidecar (the 2-scope key of
bench/floors.py: a 30d budget and an rpm limit) pinned to core 0, drives it with wrk at
16 clients from core 1, and samples it with py-spy (`record --format raw`, no idle
frames, so a sample is CPU the sidecar spent). Each sample is put in one phase of a
request (the innermost frame that names one, `PHASES` below) and, separately, charged to
the package of its innermost frame (the library that burns the CPU). py-spy needs ptrace
(root, or CAP_SYS_PTRACE).

    .venv/bin/python bench/profile_sidecar.py [--seconds 10] [--streamed] [--system bare+2]

Writes bench/results/profile-<system>-<kind>.md (the tables) and .txt (the raw stacks).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
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

# A sample's phase is the first of these (in this order) whose pattern matches its
# stack: the most specific step wins (a log line written while settling is the log's).
PHASES: tuple[tuple[str, str], ...] = (
    ("metrics and request log", r"_record \(|prometheus_client|logging/|sidecar/logs\.py"),
    ("policy: estimate (tokens, price)", r"_estimate \(|pricing/"),
    (
        "policy: admission arguments, decision",
        r"admission_call|script_call|interpret_admit|check_key",
    ),
    ("Redis: admit call", r"QuotaStore\.admit"),
    (
        "Redis: settle call (and its task)",
        r"QuotaStore\.settle|InFlight\.|Bill\.settle|\bfinish \(",
    ),
    ("Redis: other calls", r"redis/|store/"),
    ("request body: read, parse", r"_?read_body|parse_body|decode_body"),
    ("upstream: send the request", r"_?send_upstream|client_reqrep\.py"),
    (
        "upstream: read the answer",
        r"_read_upstream|_?read_at_most|client_proto\.py|aiohttp/streams",
    ),
    ("stream relay (meter, write)", r"_?relay_stream|streaming\.py"),
    ("whole answer relay (headers, write)", r"_?relay_whole"),
    ("sidecar handler, other", r"proxy_post|list_models|recording\.py|sidecar/serving\.py:1[01]\d"),
    ("aiohttp server: parse, dispatch, write", r"aiohttp/"),
    ("asyncio (tasks, timeouts)", r"asyncio/"),
    ("event loop (uvloop: I/O, callbacks)", r"serve \(sidecar/serving\.py"),
)
# Frames where a thread waits rather than works (py-spy cannot always tell).
IDLE = re.compile(r"_worker \(concurrent/futures/thread\.py:81\)$|threading\.py:\d+\)$")


def phase_of(stack: str) -> str:
    """The phase of one stack (frames outermost first, `;`-separated)."""
    for name, pattern in PHASES:
        if re.search(pattern, stack):
            return name
    return "other (interpreter, GC)"


_LLMQUOTA_PARTS = frozenset({"sidecar", "policy", "pricing", "store", "models", "cli"})


def package_of(frame: str) -> str:
    """`aiohttp`, `redis`, `llmquota.sidecar`, `asyncio`, ... of a py-spy frame
    `function (path:line)`; py-spy shortens paths to start at the package."""
    path = frame.rpartition(" (")[2].rpartition(":")[0]
    top = path.split("/", 1)[0].removesuffix(".py")
    return f"llmquota.{top}" if top in _LLMQUOTA_PARTS else top or "?"


def tables(raw: str) -> tuple[str, int]:
    """The two markdown tables of a raw py-spy profile, and its sample count."""
    by_phase: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if IDLE.search(stack):
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_phase[phase_of(stack)] += count
        by_package[package_of(frames[-1]) if frames else "?"] += count
    lines = ["| phase (innermost frame that names one) | share of CPU |", "|---|---|"]
    lines += [f"| {name} | {100 * n / total:.1f}% |" for name, n in by_phase.most_common()]
    lines += ["", "| package of the innermost frame (self time) | share of CPU |", "|---|---|"]
    lines += [f"| {name} | {100 * n / total:.1f}% |" for name, n in by_package.most_common(15)]
    return "\n".join(lines), total


@contextlib.contextmanager
def one_system(work: Path, name: str) -> Iterator[floors.System]:
    """Redis, the fake upstream and the system under test (`llmquota` or `bare+2`)."""
    with contextlib.ExitStack() as stack:
        redis_host, redis_port = stack.enter_context(systems.redis_server(work / "redis"))
        redis = f"redis://{redis_host}:{redis_port}/0"
        upstream = stack.enter_context(
            systems.fake_upstream(work, prompt_tokens=12, completion_tokens=16)
        )
        port = systems.free_port()
        if name == "llmquota":
            (work / "upstream-key").write_text("sk-upstream-bench\n")
            folder = work / "two-scopes"
            folder.mkdir()
            spec = systems.KeySpec("floor-key", floors.KEY, 1_000_000, 100_000_000, 30 * 86_400)
            (folder / "keys.yaml").write_text(systems.llmquota_manifests([spec]))
            command = floors.sidecar_command(folder, upstream, redis, port)
            ready = "/readyz"
        else:
            bare = REPO / "bench" / "bare_proxy.py"
            command = [sys.executable, str(bare), "--upstream", upstream]
            command += ["--listen", f"127.0.0.1:{port}", "--redis", redis]
            ready = "/v1/models"
        yield stack.enter_context(floors.started(command, port, ready, work / f"{name}.log"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--streamed", action="store_true")
    parser.add_argument("--system", choices=("llmquota", "bare+2"), default="llmquota")
    parser.add_argument("--label", default="", help="suffix of the result files")
    parser.add_argument("--tables", type=Path, help="only print the tables of a saved raw profile")
    args = parser.parse_args()
    if args.tables is not None:
        print(tables(args.tables.read_text())[0])
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if shutil.which("wrk") is None or not Path(py_spy).exists():
        print("bench/profile_sidecar.py needs wrk and py-spy (the dev extra)")
        return 2
    os.sched_setaffinity(0, {int(floors.LOAD_CORE)})
    kind = "streamed" if args.streamed else "whole"
    stem = f"profile-{args.system.replace('+', '')}-{kind}{args.label}"
    with (
        tempfile.TemporaryDirectory(prefix="llmquota-profile-") as tmp,
        one_system(Path(tmp), args.system) as system,
    ):
        work = Path(tmp)
        script = floors.wrk_script(work, stream=args.streamed, user=False)
        url = f"{system.base}/v1/chat/completions"
        floors.wrk(url, script, clients=4, seconds=1)
        out = work / "profile.txt"
        record = [
            py_spy, "record", "--pid", str(system.pid), "--rate", "250", "--format", "raw",
            "--duration", str(args.seconds + 1), "-o", str(out),
        ]  # fmt: skip
        sampler = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        load = floors.wrk(url, script, clients=floors.CLIENTS, seconds=args.seconds)
        _, errors = sampler.communicate(timeout=args.seconds + 30)
        if sampler.returncode != 0 or not out.exists():
            print(errors.decode(errors="replace"))
            return 1
        raw = out.read_text()
    text, samples = tables(raw)
    heading = (
        f"# Profile: {args.system}, {kind} answers, 16 clients\n\n"
        f"`python bench/profile_sidecar.py --seconds {args.seconds}"
        f"{' --streamed' if args.streamed else ''} --system {args.system}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}; "
        f"{samples} samples at 250 Hz (py-spy, CPU only), "
        f"{load['requests_per_s']:,.0f} req/s under the sampler.\n"
    )
    markdown = f"{heading}\n{text}\n"
    print(markdown)
    floors.RESULTS.mkdir(exist_ok=True)
    (floors.RESULTS / f"{stem}.md").write_text(markdown)
    (floors.RESULTS / f"{stem}.txt").write_text(raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
