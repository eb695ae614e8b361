"""Budget windows and audit in the admit script's arguments and answers: one check per
window, each on its own counter, calendar bounds from the caller's clock, the refusal
naming its window, and an audited refusal read off an admitted answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from llmquota.durations import calendar_bounds, parse_duration
from llmquota.models import ApiKey, parse_resource
from llmquota.policy import keyspace
from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import AUDIT_HEADER, Admitted, Refused, interpret_admit
from llmquota.policy.key_hash import hash_key
from llmquota.policy.limits import ResolvedPolicy
from llmquota.policy.resolve import NamespaceObjects, resolve_key_policy

NOW_MS = int(datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp() * 1000)
ESTIMATE = RequestEstimate("gpt-4o", cost_nanos=1000, tokens=10)


def policy(budget: dict[str, object], **spec: object) -> ResolvedPolicy:
    key = parse_resource(
        {
            "apiVersion": "llmquota.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": "alice", "namespace": "ns"},
            "spec": {"budget": budget, **spec},
        }
    )
    assert isinstance(key, ApiKey)
    return resolve_key_policy(key, hash_key("sk-alice"), None, NamespaceObjects({}, {}))


WINDOWED = {
    "maxBudget": 10,
    "budgetDuration": "30d",
    "timeZone": "Europe/Berlin",
    "modelMaxBudget": {"gpt-4o": 5},
    "windows": [
        {"maxBudget": 2, "budgetDuration": "daily"},
        {"maxBudget": 1, "budgetDuration": "1h"},
    ],
}


def checks(spec_json: str) -> list[dict[str, object]]:
    checked: list[dict[str, object]] = json.loads(spec_json)["checks"]
    return checked


def test_every_window_is_a_check_on_its_own_counter() -> None:
    call = admission_call(policy(WINDOWED), ESTIMATE, "r1", 30_000)
    script = call.script_call(NOW_MS)
    budget_checks = [c for c in checks(script.spec_json) if c["kind"] == "budget"]
    assert [c["max"] for c in budget_checks] == [10 * 10**9, 2 * 10**9, 10**9]
    assert [c.get("window_index", 0) for c in budget_checks] == [0, 1, 2]
    assert [c["model_max"] for c in budget_checks] == [5 * 10**9, -1, -1]  # main window's
    scope_id = "key/ns/alice"
    tag = call.scopes[0].tag
    assert script.keys[2:] == [
        keyspace.budget_key(tag, scope_id),  # the main window keeps today's counter
        keyspace.budget_window_key(tag, scope_id, "cal:daily:Europe/Berlin"),
        keyspace.budget_window_key(tag, scope_id, "fixed:3600000"),
    ]
    daily = budget_checks[1]
    assert daily["bounds"] == calendar_bounds(parse_duration("daily", "Europe/Berlin"), NOW_MS)
    assert "bounds" not in budget_checks[0]
    assert "bounds" not in budget_checks[2]


def test_a_calendar_window_needs_the_callers_clock() -> None:
    call = admission_call(policy(WINDOWED), ESTIMATE, "r1", 30_000)
    with pytest.raises(ValueError, match="caller's clock"):
        call.script_call()


def test_audited_limits_mark_their_checks() -> None:
    audited = policy(
        {"maxBudget": 1, "enforcement": "Audit"}, rateLimit={"rpm": 1, "enforcement": "Audit"}
    )
    call = admission_call(audited, ESTIMATE, "r1", 30_000)
    assert [c.get("audit") for c in checks(call.script_call().spec_json)] == [True, True]
    enforced = admission_call(policy({"maxBudget": 1}), ESTIMATE, "r1", 30_000)
    assert "audit" not in checks(enforced.script_call().spec_json)[0]


def test_a_refusal_names_the_window_and_its_reset() -> None:
    call = admission_call(policy(WINDOWED), ESTIMATE, "r1", 30_000)
    refused = interpret_admit([0, 0, b"max_budget", 10**9, 10**9, 90_000, 0, 2], call)
    assert isinstance(refused, Refused)
    assert refused.message == (
        "Budget has been exceeded for key alice (1h window): spend 1.00, max budget 1.00, "
        "resets in 1m30s"
    )
    assert refused.headers == {"Retry-After": "90"}
    main = interpret_admit([0, 0, b"max_budget", 10**9, 10**9, 90_000, 0, 0], call)
    assert isinstance(main, Refused)
    assert main.message.startswith("Budget has been exceeded for key alice: ")


def test_an_admitted_answer_carries_what_an_audited_scope_would_refuse() -> None:
    call = admission_call(policy(WINDOWED), ESTIMATE, "r1", 30_000)
    answer: list[int | bytes] = [
        1,
        0,
        -1,
        -1,
        -1,
        -1,
        1000,
        0,
        0,
        b"max_budget",
        2 * 10**9,
        2 * 10**9,
        5000,
        0,
        1,
    ]
    admitted = interpret_admit(answer, call)
    assert isinstance(admitted, Admitted)
    assert admitted.audit is not None
    assert admitted.audit.scope.label == "key alice"
    assert admitted.audit.header == (
        "key alice would refuse: Budget has been exceeded for key alice (daily window): "
        "spend 2.00, max budget 2.00, resets in 5s"
    )
    plain = interpret_admit([1, 0, -1, -1, -1, -1, 1000, 0], call)
    assert isinstance(plain, Admitted)
    assert plain.audit is None
    assert AUDIT_HEADER == "x-llmquota-audit"


def test_the_audit_header_is_printable_ascii_whatever_the_end_user_is_called() -> None:
    owner = policy({"maxBudget": 1})
    key = owner.model_copy(
        update={"scopes": [owner.scopes[0].model_copy(update={"label": "end user ü\r\nX: y"})]}
    )
    call = admission_call(key, ESTIMATE, "r1", 30_000)
    admitted = interpret_admit(
        [1, 0, -1, -1, -1, -1, 1000, 0, 0, b"max_budget", 1, 1, -1, 0, 0], call
    )
    assert isinstance(admitted, Admitted)
    assert admitted.audit is not None
    assert admitted.audit.header.startswith("end user ???X: y would refuse")
