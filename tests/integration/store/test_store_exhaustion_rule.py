"""`llmquota.policy.exhaustion` is admit.lua's rule: over the same counters, a request is
refused for the budget exactly when the Python rule says the budget is exhausted."""

from __future__ import annotations

import itertools
import uuid

import pytest

from llmquota.policy import keyspace
from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import Refused, interpret_admit
from llmquota.policy.exhaustion import budget_exhausted, budget_left_nanos
from llmquota.policy.limits import BudgetLimits, ResolvedPolicy, Scope
from llmquota.store import QuotaStore

pytestmark = pytest.mark.integration

MAX = 1_000


@pytest.mark.parametrize(
    ("spend", "reserved"),
    list(itertools.product([0, 1, 400, 999, 1_000, 1_200], [0, 1, 600, 1_000])),
)
async def test_admission_refuses_exactly_when_the_rule_says_exhausted(
    store: QuotaStore, spend: int, reserved: int
) -> None:
    scope = Scope(
        kind="key", id="key/ns/rule", tag="ns/rule", label="key rule",
        budget=BudgetLimits(max_nanos=MAX),
    )  # fmt: skip
    policy = ResolvedPolicy(key_hash="h", namespace="ns", key_name="rule", scopes=[scope])
    await store.redis.hset(
        keyspace.budget_key(scope.tag, scope.id),
        mapping={"win": 0, "spend": spend, "resv": reserved},
    )
    call = admission_call(policy, RequestEstimate("m", 1, 1), uuid.uuid4().hex, 30_000)
    decision = interpret_admit(await store.admit(call), call)
    refused = isinstance(decision, Refused) and decision.limit == "max_budget"
    assert refused == budget_exhausted(MAX, spend, reserved)
    if not refused:
        left = budget_left_nanos(MAX, spend, reserved)
        assert left is not None
        assert decision.budget_left_nanos == max(0, left - 1)  # type: ignore[union-attr]


def test_no_max_is_never_exhausted() -> None:
    assert not budget_exhausted(None, 10**12, 10**12)
    assert not budget_exhausted(-1, 10**12, 0)
    assert budget_left_nanos(None, 5, 5) is None
    assert budget_left_nanos(10, 8, 5) == 0
