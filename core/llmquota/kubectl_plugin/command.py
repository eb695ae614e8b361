"""`kubectl-llmquota` (run as `kubectl llmquota`): `top`, `why apikey/NAME`, `usage`.

Flags follow kubectl's: `-n/--namespace`, `-A/--all-namespaces`, `--kubeconfig`,
`--context`, `-o table|json|yaml`. Exit code 0, or 1 with one `error: ...` line on
stderr when the cluster cannot be read (2 for a bad command line, as argparse does).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from llmquota.kubectl_plugin.cluster import Cluster, ClusterError
from llmquota.kubectl_plugin.output import OutputFormat, format_document
from llmquota.kubectl_plugin.subjects import SubjectKind, SubjectView, subject_view
from llmquota.kubectl_plugin.top import SORT_KEYS, SortKey, sort_subjects, top_document, top_table
from llmquota.kubectl_plugin.usage import (
    DIMENSIONS,
    Dimension,
    usage_document,
    usage_table,
)
from llmquota.kubectl_plugin.why import why_key
from llmquota.kubectl_plugin.why_report import GlobalBudget
from llmquota.kubectl_plugin.why_text import why_text

__all__ = ["build_parser", "main"]

# What a user may type for a kind, as kubectl accepts plural, singular and short names.
_KIND_NAMES: dict[str, SubjectKind] = {
    **dict.fromkeys(("teams", "team", "lqteam"), "Team"),
    **dict.fromkeys(("apikeys", "apikey", "lqkey"), "ApiKey"),
}
_PLURALS: dict[SubjectKind, str] = {"Team": "teams", "ApiKey": "apikeys"}


def _common_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG)")
    flags.add_argument("--context", help="the kubeconfig context to use")
    flags.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    flags.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default="table",
        help="table (default), json or yaml",
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    """The command line of `kubectl llmquota`."""
    parser = argparse.ArgumentParser(
        prog="kubectl llmquota", description="llmquota's spend, budgets and refusals."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_flags()

    top = commands.add_parser(
        "top", parents=[common], help="teams and keys by spend, remaining, reset, forecast"
    )
    top.add_argument(
        "kind", nargs="?", choices=sorted(_KIND_NAMES), metavar="teams|apikeys", help="one kind"
    )
    top.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    top.add_argument("--sort", choices=SORT_KEYS, default="spend", help="%(default)s")

    why = commands.add_parser(
        "why", parents=[common], help="which scope refuses an ApiKey and what would lift it"
    )
    why.add_argument("target", metavar="apikey/NAME", help="the ApiKey (also: apikey NAME)")
    why.add_argument("name", nargs="?", help=argparse.SUPPRESS)
    why.add_argument(
        "--global-budget",
        metavar="NS/NAME",
        help="the operator's --global-budget (default: read from its Deployment)",
    )

    usage = commands.add_parser(
        "usage", parents=[common], help="spend by model, team member and workload"
    )
    usage.add_argument("target", nargs="?", help="teams, apikeys, team/NAME or apikey/NAME")
    usage.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    usage.add_argument(
        "--by", action="append", choices=DIMENSIONS, help="model, member, workload (default: all)"
    )
    return parser


def _kind(word: str, parser: argparse.ArgumentParser) -> SubjectKind:
    kind = _KIND_NAMES.get(word.lower())
    if kind is None:
        parser.error(f"unknown kind {word!r}: use teams or apikeys")
    return kind


def _checked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Check what the command line names before connecting, as kubectl does: `kinds` and
    `object_name` (top, usage), `apikey` and `global_ref` (why)."""
    if args.command == "why":
        kind_word, _, name = args.target.partition("/")
        name = name or args.name or ""
        if _kind(kind_word, parser) != "ApiKey" or not name or (args.name and "/" in args.target):
            parser.error("why takes one ApiKey: why apikey/NAME")
        args.apikey = name
        args.global_ref = None
        if args.global_budget is not None:
            args.global_ref = _global_ref(args.global_budget)
            if args.global_ref is None:
                parser.error(f"--global-budget {args.global_budget!r} is not NAMESPACE/NAME")
        return args
    target = (args.kind if args.command == "top" else args.target) or ""
    kind_word, _, name = target.partition("/")
    args.kinds = [_kind(kind_word, parser)] if kind_word else ["Team", "ApiKey"]
    args.object_name = name or None
    if name and args.all_namespaces:
        parser.error(f"{target} is one object, in one namespace: drop -A")
    return args


def _global_ref(value: str) -> tuple[str, str] | None:
    namespace, _, name = value.partition("/")
    return (namespace, name) if namespace and name and "/" not in name else None


def _write(text: str) -> None:
    sys.stdout.write(text)


async def _subjects(
    cluster: Cluster, kinds: Sequence[SubjectKind], namespace: str | None
) -> list[SubjectView]:
    lists = await asyncio.gather(
        *(cluster.list_objects(_PLURALS[kind], namespace) for kind in kinds)
    )
    pairs = zip(kinds, lists, strict=True)
    return [subject_view(obj, kind) for kind, found in pairs for obj in found]


def _nothing_found(namespace: str | None) -> None:
    where = "" if namespace is None else f" in {namespace} namespace"
    sys.stderr.write(f"No resources found{where}.\n")


async def _top(args: argparse.Namespace, cluster: Cluster) -> int:
    namespace = None if args.all_namespaces else args.namespace or cluster.namespace
    subjects = await _subjects(cluster, args.kinds, namespace)
    subjects = sort_subjects(subjects, cast(SortKey, args.sort))
    if args.output != "table":
        _write(format_document(top_document(subjects), cast(OutputFormat, args.output)))
    elif not subjects:
        _nothing_found(namespace)
    else:
        _write(top_table(subjects, datetime.now(UTC), all_namespaces=namespace is None))
    return 0


async def _global_budget(args: argparse.Namespace, cluster: Cluster) -> GlobalBudget | None:
    """The global budget: --global-budget, else the operator Deployment's flag."""
    ref = args.global_ref
    if ref is None:
        found = await cluster.operator_global_budgets()
        if found is None:
            sys.stderr.write(
                "warning: Deployments may not be listed, so the operator's --global-budget is "
                "unknown; pass --global-budget NS/NAME\n"
            )
            return None
        if len(found) > 1:
            sys.stderr.write(f"warning: operators with different global budgets: {found}\n")
        if not found:
            return None
        ref = _global_ref(found[0])
        if ref is None:
            sys.stderr.write(f"warning: the operator's --global-budget {found[0]!r} is invalid\n")
            return None
    namespace, name = ref
    return GlobalBudget(namespace, name, await cluster.get_object("budgets", namespace, name))


async def _referenced_budgets(
    cluster: Cluster, namespace: str, subjects: Sequence[SubjectView]
) -> dict[str, dict[str, Any] | None]:
    names = sorted(
        {
            str(ref["name"])
            for subject in subjects
            if isinstance(ref := subject.spec.get("budgetRef"), dict) and ref.get("name")
        }
    )
    found = await asyncio.gather(*(cluster.get_object("budgets", namespace, n) for n in names))
    return dict(zip(names, found, strict=True))


async def _why(args: argparse.Namespace, cluster: Cluster) -> int:
    name = args.apikey
    namespace = args.namespace or cluster.namespace
    key_object = await cluster.get_object("apikeys", namespace, name)
    if key_object is None:
        msg = f'apikeys.llmquota.dev "{name}" not found in namespace "{namespace}"'
        raise ClusterError(msg)
    key = subject_view(key_object, "ApiKey")
    team = None
    if key.team:
        team_object = await cluster.get_object("teams", namespace, key.team)
        team = None if team_object is None else subject_view(team_object, "Team")
    budgets = await _referenced_budgets(cluster, namespace, [s for s in (key, team) if s])
    global_budget = await _global_budget(args, cluster)
    now = datetime.now(UTC)
    report = why_key(key, team, global_budget, now, budgets=budgets)
    if args.output != "table":
        _write(format_document(report.document(), cast(OutputFormat, args.output)))
    else:
        _write(why_text(report, now))
    return 0


async def _usage(args: argparse.Namespace, cluster: Cluster) -> int:
    namespace = None if args.all_namespaces else args.namespace or cluster.namespace
    dimensions = cast(list[Dimension], args.by or list(DIMENSIONS))
    name = args.object_name
    if name is not None and namespace is not None:
        (kind,) = args.kinds
        found = await cluster.get_object(_PLURALS[kind], namespace, name)
        if found is None:
            msg = f'{_PLURALS[kind]}.llmquota.dev "{name}" not found in namespace "{namespace}"'
            raise ClusterError(msg)
        subjects = [subject_view(found, kind)]
    else:
        subjects = sort_subjects(await _subjects(cluster, args.kinds, namespace), "name")
    if args.output != "table":
        document = usage_document(subjects, dimensions)
        _write(format_document(document, cast(OutputFormat, args.output)))
    elif not subjects:
        _nothing_found(namespace)
    else:
        _write(usage_table(subjects, dimensions, all_namespaces=namespace is None))
    return 0


_COMMANDS = {"top": _top, "why": _why, "usage": _usage}


async def _run(args: argparse.Namespace) -> int:
    cluster = await Cluster.connect(args.kubeconfig, args.context)
    try:
        return await _COMMANDS[args.command](args, cluster)
    finally:
        await cluster.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 1 with a one-line error when the cluster cannot be read."""
    parser = build_parser()
    args = _checked(parser.parse_args(argv), parser)
    try:
        return asyncio.run(_run(args))
    except ClusterError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 130
