"""`kubectl llmquota usage`: where each Team's and ApiKey's spend went, by model, by
team member and by workload (`status.workloadSpend`, when the operator writes it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

from llmquota.kubectl_plugin.output import format_table, format_usd
from llmquota.kubectl_plugin.subjects import SubjectView

__all__ = ["DIMENSIONS", "Dimension", "usage_document", "usage_rows", "usage_table"]

Dimension = Literal["model", "member", "workload"]
DIMENSIONS: tuple[str, ...] = get_args(Dimension)


def _breakdown(subject: SubjectView, dimension: Dimension) -> dict[str, float]:
    if dimension == "model":
        return subject.model_spend
    if dimension == "member":
        return subject.member_spend
    return subject.workload_spend


def usage_rows(
    subjects: Sequence[SubjectView], dimensions: Sequence[Dimension]
) -> list[tuple[SubjectView, Dimension, str, float]]:
    """(subject, dimension, model/member/workload, USD): per subject, most spend first."""
    rows = []
    for subject in subjects:
        for dimension in dimensions:
            spend = _breakdown(subject, dimension)
            rows += [
                (subject, dimension, name, amount)
                for name, amount in sorted(spend.items(), key=lambda item: (-item[1], item[0]))
            ]
    return rows


def _share(amount: float, subject: SubjectView) -> str:
    total = subject.allowance.spend
    if not total:
        return "-"
    return f"{100 * amount / total:.0f}%"


def usage_table(
    subjects: Sequence[SubjectView], dimensions: Sequence[Dimension], *, all_namespaces: bool
) -> str:
    """The table `usage` prints: one row per model, member or workload of each subject."""
    headers = ["NAME", "BY", "WHAT", "SPEND", "SHARE"]
    rows = []
    for subject, dimension, name, amount in usage_rows(subjects, dimensions):
        row = [subject.ref, dimension, name, format_usd(amount), _share(amount, subject)]
        rows.append([subject.namespace, *row] if all_namespaces else row)
    return format_table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


def usage_document(
    subjects: Sequence[SubjectView], dimensions: Sequence[Dimension]
) -> dict[str, Any]:
    """What `usage -o json|yaml` prints: each subject's spend and its breakdowns."""
    return {
        "items": [
            {
                "kind": subject.kind,
                "namespace": subject.namespace,
                "name": subject.name,
                "spend": subject.allowance.spend,
                **{
                    f"{dimension}Spend": dict(_breakdown(subject, dimension))
                    for dimension in dimensions
                },
            }
            for subject in subjects
        ]
    }
