"""The `llmquota` console script: one entry point, one subcommand per process kind.

Each subcommand's module is imported only when chosen, so `llmquota sidecar` never
loads kopf and `llmquota operator` never loads the proxy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# subcommand -> (module, one-line help). Each module has `add_arguments(parser)` and
# `run(args) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sidecar": ("llmquota.sidecar.command", "the enforcing proxy that runs beside a workload"),
    "operator": ("llmquota.operator.command", "the kopf operator that reconciles resources"),
    "fake-upstream": ("llmquota.sandbox.fake_upstream.command", "a fake OpenAI-compatible server"),
    "crds": ("llmquota.crdgen", "print or write the CustomResourceDefinitions"),
    "check": ("llmquota.check", "validate a --manifests folder as the sidecar would load it"),
    "demo": ("llmquota.sandbox.demo", "run the one-command demo"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the subcommand, import its module, and run it."""
    parser = argparse.ArgumentParser(prog="llmquota", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in (argv or sys.argv[1:]) if arg in SUBCOMMANDS), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text)
        if name == chosen:
            try:
                importlib.import_module(module_name).add_arguments(subparser)
            except ValueError as error:  # a flag's default from a malformed LLMQUOTA_* variable
                print(f"llmquota {name}: an LLMQUOTA_* variable: {error}", file=sys.stderr)
                return 2
    args = parser.parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    exit_code: int = module.run(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
