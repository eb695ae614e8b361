"""`usage`: spend by model, member and workload."""

from __future__ import annotations

from llmquota.kubectl_plugin.subjects import subject_view
from llmquota.kubectl_plugin.usage import usage_document, usage_rows, usage_table

TEAM = subject_view(
    {
        "metadata": {"name": "qa", "namespace": "ns"},
        "status": {
            "spend": 10,
            "modelSpend": {"llama3": 2, "gpt-4o": 8},
            "workloadSpend": {"deployment/chatbot": 6, "job/nightly": 4},
        },
    },
    "Team",
)


def test_rows_per_dimension_most_spend_first() -> None:
    rows = [
        (dim, name, amount) for _, dim, name, amount in usage_rows([TEAM], ["model", "workload"])
    ]
    assert rows == [
        ("model", "gpt-4o", 8),
        ("model", "llama3", 2),
        ("workload", "deployment/chatbot", 6),
        ("workload", "job/nightly", 4),
    ]


def test_table_shows_the_share_of_the_subject_spend() -> None:
    lines = usage_table([TEAM], ["workload"], all_namespaces=False).splitlines()
    assert lines[0].split() == ["NAME", "BY", "WHAT", "SPEND", "SHARE"]
    assert lines[1].split() == ["team/qa", "workload", "deployment/chatbot", "6.00", "60%"]


def test_document_has_one_map_per_dimension() -> None:
    item = usage_document([TEAM], ["model", "member", "workload"])["items"][0]
    assert item["workloadSpend"] == {"deployment/chatbot": 6, "job/nightly": 4}
    assert item["memberSpend"] == {}
    assert item["spend"] == 10
