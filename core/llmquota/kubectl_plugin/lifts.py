"""What would lift a refusal: wait for the reset, raise a limit (and where), a
BudgetOverride to apply, or a patch for an expired or blocked key; each with the
command to run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta

from llmquota.kubectl_plugin.output import iso_time, until
from llmquota.kubectl_plugin.subjects import SubjectView
from llmquota.kubectl_plugin.why_report import GlobalBudget, KeyState, Lift, Scope
from llmquota.models import API_GROUP, API_VERSION

__all__ = ["OVERRIDE_DAYS", "override_manifest", "scope_lifts", "state_lifts"]

OVERRIDE_DAYS = 7
"""How long a suggested BudgetOverride lasts when the scope's window never resets."""


def _budget_field(subject: SubjectView, scope: Scope) -> tuple[str, str, str]:
    """(field, kind, name) to raise for a Team's or ApiKey's window."""
    ref = subject.spec.get("budgetRef")
    own = "maxBudget" if scope.window == 0 else f"windows[{scope.window - 1}].maxBudget"
    if isinstance(ref, Mapping) and ref.get("name"):
        return f"spec.{own}", "budget", str(ref["name"])
    return f"spec.budget.{own}", subject.kind.lower(), subject.name


def override_manifest(subject: SubjectView, scope: Scope, now: datetime) -> str:
    """A BudgetOverride raising the subject's maxBudget until its window resets (or for a
    week when it never does), as a `kubectl apply` heredoc to edit and run."""
    allowance = scope.allowance
    expires = allowance.reset_at
    if expires is None or expires <= now:
        expires = now + timedelta(days=OVERRIDE_DAYS)
    increase = allowance.max_budget or 1.0
    return "\n".join(
        [
            "kubectl apply -f - <<EOF",
            f"apiVersion: {API_GROUP}/{API_VERSION}",
            "kind: BudgetOverride",
            "metadata:",
            f"  name: {subject.name}-override",
            f"  namespace: {subject.namespace}",
            "spec:",
            f"  target: {{kind: {subject.kind}, name: {subject.name}}}",
            f"  increase: {increase:g}  # USD added to maxBudget while active",
            f"  expires: {json.dumps(iso_time(expires))}",
            '  reason: "<why this increase is approved>"',
            "EOF",
        ]
    )


def scope_lifts(
    scope: Scope, owner: SubjectView | None, global_budget: GlobalBudget | None, now: datetime
) -> list[Lift]:
    """What would lift one refusing scope: waiting, raising the limit, an override."""
    lifts = []
    reset_at = scope.allowance.reset_at
    if reset_at is not None and reset_at > now:
        lifts.append(Lift(f"wait until {until(reset_at, now)}, when {scope.label}'s window resets"))
    if scope.kind == "global" and global_budget is not None:
        namespace, name = global_budget.namespace, global_budget.name
        lifts.append(
            Lift(
                f"raise spec.maxBudget of Budget {namespace}/{name} (the global budget: "
                "every request through every sidecar counts against it)",
                f"kubectl edit budget {name} -n {namespace}",
            )
        )
    elif scope.kind == "member" and owner is not None:
        lifts.append(
            Lift(
                f"raise spec.members[user={scope.user}].maxBudgetInTeam of {owner.ref}",
                f"kubectl edit team {owner.name} -n {owner.namespace}",
            )
        )
    elif owner is not None:
        field_path, kind, name = _budget_field(owner, scope)
        shared = " (a shared Budget: every subject that references it gets the new limit)"
        lifts.append(
            Lift(
                f"raise {field_path} of {kind}/{name}{shared if kind == 'budget' else ''}",
                f"kubectl edit {kind} {name} -n {owner.namespace}",
            )
        )
        lifts.append(
            Lift(
                f"or create a BudgetOverride for {owner.ref} (whoever RBAC lets create it "
                "approves the increase)",
                override_manifest(owner, scope, now),
            )
        )
    return lifts


def state_lifts(key: SubjectView, state: KeyState) -> tuple[list[str], list[Lift]]:
    problems: list[str] = []
    lifts: list[Lift] = []
    patch = f"kubectl patch apikey {key.name} -n {key.namespace} --type merge -p"
    if state.expired:
        problems.append(f"the key expired at {iso_time(state.expires) or 'its spec.expires'}")
        lifts.append(
            Lift(
                "set a later spec.expires, or remove it",
                f'{patch} \'{{"spec":{{"expires":null}}}}\'',
            )
        )
    if state.blocked:
        problems.append("the key is blocked (spec.blocked is true)")
        lifts.append(Lift("unblock it", f'{patch} \'{{"spec":{{"blocked":false}}}}\''))
    return problems, lifts
