"""`llmquota check --manifests DIR`: validate a standalone folder before a sidecar loads it.

The same models and cross-object checks as `llmquota sidecar --manifests DIR` (which
refuses to start on any of these problems), and as the API server's schema plus the
operator's checks: one line per problem, naming file, object and field; exit status 1
when there is any.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llmquota.manifests import check_manifest_dir, parse_global_budget_ref

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `llmquota check`; the sidecar's environment variables apply too."""
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    parser.add_argument(
        "--manifests",
        type=Path,
        default=os.environ.get("LLMQUOTA_MANIFESTS"),
        required="LLMQUOTA_MANIFESTS" not in os.environ,
        metavar="DIR",
        help="the folder of Team/ApiKey/Budget/RateLimit/Secret YAML to check",
    )
    parser.add_argument(
        "--global-budget",
        default=os.environ.get("LLMQUOTA_GLOBAL_BUDGET"),
        metavar="NS/NAME",
        help="a Budget every request counts against: it must be in the folder",
    )


def run(args: argparse.Namespace) -> int:
    """Print each problem; 0 when there is none, 1 when there is one, 2 for bad flags."""
    try:
        global_budget = parse_global_budget_ref(args.global_budget)
    except ValueError as error:
        print(f"llmquota check: {error}", file=sys.stderr)
        return 2
    directory = Path(args.manifests)
    resolution = check_manifest_dir(directory, global_budget)
    for problem in resolution.problems:
        print(problem)
    if resolution.problems:
        print(f"{directory}: {len(resolution.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{directory}: ok, {len(resolution.policies)} key(s)")
    return 0
