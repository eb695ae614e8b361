"""The policy cache's changes reach the admission plans: a replaced policy is not kept
alive by the plans made for it."""

from __future__ import annotations

import weakref
from typing import cast

from llmquota.policy.admission import admission_plan
from llmquota.policy.limits import ResolvedPolicy
from llmquota.sidecar.policies import PolicyCache
from llmquota.store import QuotaStore


def test_a_policy_change_lets_go_of_the_plans_that_hold_the_old_policy() -> None:
    old = ResolvedPolicy(key_hash="hash-1", namespace="quota", key_name="bot")
    admission_plan(old, "gpt-4o", "customer-1")
    held = weakref.ref(old)
    del old
    assert held() is not None, "the plan holds its policy (its identity is the plan's key)"
    PolicyCache(cast("QuotaStore", None)).invalidate("hash-1")
    assert held() is None
