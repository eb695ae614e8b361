"""Script answers become headers or OpenAI-style refusals naming scope, limit and wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.integration.store.scenario import api_key, policy_for, team

from llmquota.policy.admission import AdmissionCall, RequestEstimate, admission_call
from llmquota.policy.decision import (
    Admitted,
    Refused,
    check_key,
    format_money,
    format_wait,
    interpret_admit,
)
from llmquota.policy.limits import nanos

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def team_call() -> AdmissionCall:
    qa = team("qa", budget={"maxBudget": 100, "budgetDuration": "30d"}, rateLimit={"rpm": 60})
    policy = policy_for(api_key("bot", team="qa", budget={"maxBudget": 1}), qa)
    return admission_call(policy, RequestEstimate("gpt-4o", nanos(0.01), 100), "r", 1000)


def test_admitted_headers() -> None:
    decision = interpret_admit([1, nanos(0.25), 60, 59, 1000, 900, 12_500], team_call())
    assert decision == Admitted(
        headers={
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "13s",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "900",
            "x-ratelimit-reset-tokens": "13s",
            "x-llmquota-budget-remaining": "0.250000000",
        },
        budget_left_nanos=nanos(0.25),
    )


def test_admitted_without_limits_has_no_limit_headers() -> None:
    assert interpret_admit([1, -1, -1, -1, -1, -1, 500], team_call()) == Admitted({}, None)


def test_budget_refusal_names_scope_spend_max_and_reset() -> None:
    raw: list[int | bytes | str] = [
        0,
        0,
        b"max_budget",
        nanos(100),
        nanos(100),
        3 * 86_400_000 + 7_200_000,
        nanos(0.01),
    ]
    refused = interpret_admit(raw, team_call())
    assert isinstance(refused, Refused)
    assert (refused.status, refused.error_type, refused.code) == (
        402, "budget_exceeded", "budget_exceeded"
    )  # fmt: skip
    assert (refused.limit, refused.scope_label) == ("max_budget", "team qa")
    assert refused.message == (
        "Budget has been exceeded for team qa: spend 100.00 (+0.01 reserved in flight), "
        "max budget 100.00, resets in 3d2h"
    )
    assert refused.headers == {"Retry-After": str(3 * 86_400 + 7_200)}
    assert refused.body() == {
        "error": {
            "message": refused.message,
            "type": "budget_exceeded",
            "param": None,
            "code": "budget_exceeded",
        }
    }


@pytest.mark.parametrize("retry_ms", [-1, 86_400_000], ids=["never-resets", "resets-in-a-day"])
def test_a_refusal_only_reservations_cause_says_so_and_asks_to_retry_soon(retry_ms: int) -> None:
    raw: list[int | bytes | str] = [0, 0, b"max_budget", 1000, 200_000, retry_ms, 155_000]
    refused = interpret_admit(raw, team_call())
    assert isinstance(refused, Refused)
    assert refused.status == 402
    assert "held by requests in flight" in refused.message
    assert "(+0.000155 reserved in flight)" in refused.message
    assert refused.headers == {"Retry-After": "1"}


def test_model_budget_refusal_that_never_resets_has_no_retry_after() -> None:
    refused = interpret_admit([0, 1, "model_max_budget", 5, 5, -1, 0], team_call())
    assert isinstance(refused, Refused)
    assert refused.message == (
        "Model budget has been exceeded for key bot: spend 5e-09, max budget 5e-09, never resets"
    )
    assert refused.headers == {}


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        ("rpm", "requests per minute (rpm) is 60, used 60"),
        ("dynamic_rpm", "share of the Dynamic rpm pool is 60, used 60"),
        ("max_parallel_requests", "requests in flight (maxParallelRequests) is 60, used 60"),
    ],
)
def test_rate_refusal_names_the_limit_and_retry(limit: str, words: str) -> None:
    refused = interpret_admit([0, 0, limit, 60, 60, 12_001, 0], team_call())
    assert isinstance(refused, Refused)
    assert (refused.status, refused.code, refused.limit) == (429, "rate_limit_exceeded", limit)
    assert refused.message == f"Rate limit exceeded for team qa: {words}; retry in 13s"
    assert refused.headers == {"Retry-After": "13"}


def test_retry_after_is_at_least_one_second() -> None:
    refused = interpret_admit([0, 0, "rpm", 60, 60, 1, 0], team_call())
    assert isinstance(refused, Refused)
    assert refused.headers == {"Retry-After": "1"}
    assert refused.message.endswith("retry in 1ms")


def test_check_key_refuses_blocked_expired_and_other_models() -> None:
    qa = team("qa")
    blocked = policy_for(api_key("bot", blocked=True), qa)
    assert check_key(blocked, "gpt-4o", NOW) == Refused(
        401, "authentication_error", "key_blocked", "Key bot is blocked (spec.blocked is true)."
    )
    expiring = policy_for(api_key("old", expires=NOW.isoformat()))
    refused = check_key(expiring, "gpt-4o", NOW)
    assert refused is not None
    assert (refused.status, refused.code) == (401, "key_expired")
    assert check_key(expiring, "gpt-4o", NOW - timedelta(milliseconds=1)) is None
    narrow = policy_for(api_key("narrow", models=["llama3", "gpt-4o-mini"]))
    refused = check_key(narrow, "gpt-4o", NOW)
    assert refused is not None
    assert (refused.status, refused.error_type, refused.code) == (
        403, "permission_error", "model_not_allowed"
    )  # fmt: skip
    assert refused.message == (
        "Model 'gpt-4o' is not allowed for key narrow; allowed: llama3, gpt-4o-mini."
    )
    assert check_key(narrow, "llama3", NOW) is None


@pytest.mark.parametrize(
    ("amount", "shown"),
    [(0, "0.00"), (12.345, "12.35"), (0.01, "0.01"), (0.0035, "0.0035"), (3.5e-06, "3.5e-06")],
)
def test_format_money(amount: float, shown: str) -> None:
    assert format_money(amount) == shown


@pytest.mark.parametrize(
    ("milliseconds", "shown"),
    [(-5, "0ms"), (950, "950ms"), (1000, "1s"), (1001, "2s"), (59_000, "59s"), (59_500, "1m"),
     (3 * 3_600_000 + 12 * 60_000, "3h12m"), (2 * 86_400_000 + 4 * 3_600_000 + 5_000, "2d4h")],
)  # fmt: skip
def test_format_wait(milliseconds: int, shown: str) -> None:
    assert format_wait(milliseconds) == shown
