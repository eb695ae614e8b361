"""`make bench`: run the benchmarks, then show their latest tables in the README.

Each benchmark prints its table and writes `bench/results/<name>.{json,md}` (the
Markdown names the machine and its load). This script runs them one after the other,
never at once (they would measure each other), then copies every `bench/results/*.md`
into the README between the `bench:start` and `bench:end` markers.

    python bench/run.py                    # all but the soak (about 15 minutes)
    python bench/run.py core sidecar       # some of them
    python bench/run.py --readme-only      # only refresh the README from bench/results
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# name -> (script, the result it writes), in README order
BENCHMARKS: dict[str, tuple[str, str]] = {
    "floors": ("bench/floors.py", "floors"),
    "gateway": ("bench/gateway_workers.py", "gateway-workers"),
    "core": ("bench/core_admission.py", "core-admission"),
    "sidecar": ("bench/sidecar_overhead.py", "sidecar-overhead"),
    "litellm": ("bench/litellm/compare.py", "litellm-comparison"),
    "operator": ("bench/operator_reconcile.py", "operator"),
    "redis": ("bench/redis_capacity.py", "redis_capacity"),
    "soak": ("bench/soak.py", "soak"),
}
DEFAULT = ("floors", "gateway", "core", "sidecar", "litellm", "operator", "redis")


def run_benchmark(name: str) -> None:
    script, _ = BENCHMARKS[name]
    print(f"\n### {name}: {script}", flush=True)
    subprocess.run([sys.executable, str(ROOT / script)], cwd=ROOT, check=True)


def readme_section() -> str:
    """Every result's Markdown, its headings moved under the README's `## Benchmarks`."""
    parts = []
    for _, result in BENCHMARKS.values():
        path = RESULTS / f"{result}.md"
        if path.exists():
            text = path.read_text().strip()
            parts.append(
                "\n".join(
                    f"##{line}" if line.startswith("#") else line for line in text.splitlines()
                )
            )
    return "\n\n".join(parts)


def refresh_readme() -> None:
    text = README.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    README.write_text(f"{before}{START}\n{readme_section()}\n{END}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(BENCHMARKS)}")
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(
            f"unknown benchmark {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}"
        )
    if not args.readme_only:
        for name in args.names or DEFAULT:
            run_benchmark(name)
    refresh_readme()
    print(f"README.md: benchmark tables refreshed from {RESULTS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
