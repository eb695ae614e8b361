"""`kubectl llmquota why apikey/NAME`: which scope refuses a key, until when, and what
would lift it, decided from the objects as read (pure: no I/O, `now` is given).

A request is checked against every scope that applies, widest first, as the sidecar's
admission does: the global budget, the key's team, the team member's cap, the key. A
scope refuses when its status shows spend at or over its maxBudget (the operator's and
the sidecar's rule), or when the key's own BudgetExceeded condition names it (the
operator names the team or global scope that refuses a key there; its reason or message
then mentions "global", "member" or "team").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from llmquota.kubectl_plugin.output import format_usd, iso_time, time_until
from llmquota.kubectl_plugin.subjects import (
    Allowance,
    OverrideView,
    SubjectView,
    money,
    parse_time,
)
from llmquota.models import API_GROUP, API_VERSION

__all__ = [
    "GlobalBudget",
    "KeyState",
    "Lift",
    "Scope",
    "ScopeKind",
    "WhyReport",
    "key_state",
    "override_manifest",
    "why_key",
]

ScopeKind = Literal["global", "team", "member", "key"]
OVERRIDE_DAYS = 7
"""How long a suggested BudgetOverride lasts when the scope's window never resets."""


@dataclass(frozen=True, slots=True)
class GlobalBudget:
    """The operator's --global-budget: where it is and the Budget (None: not found)."""

    namespace: str
    name: str
    budget: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget a request of the key counts against, and whether it refuses."""

    kind: ScopeKind
    label: str
    allowance: Allowance
    refuses: bool
    overrides: tuple[OverrideView, ...] = ()


@dataclass(frozen=True, slots=True)
class Lift:
    """One way to lift a refusal: what to do, and the command, when there is one."""

    text: str
    command: str | None = None


@dataclass(frozen=True, slots=True)
class KeyState:
    """The key's own state: expiry, blocked, and the models it may use."""

    expires: datetime | None
    expired: bool
    blocked: bool
    key_models: tuple[str, ...]
    team_models: tuple[str, ...]

    @property
    def allowed_models(self) -> tuple[str, ...] | None:
        """Models the key may use: its own within its team's; None means every model."""
        if not self.key_models:
            return self.team_models or None
        if not self.team_models:
            return self.key_models
        return tuple(model for model in self.key_models if model in self.team_models)


@dataclass(frozen=True, slots=True)
class WhyReport:
    """Everything `why` prints: the scopes, the key's state, problems and lifts."""

    namespace: str
    name: str
    scopes: tuple[Scope, ...]
    key_state: KeyState
    problems: tuple[str, ...]
    lifts: tuple[Lift, ...] = field(default=())

    @property
    def refused(self) -> bool:
        """Whether anything refuses the key's requests now."""
        return bool(self.problems)

    def document(self) -> dict[str, Any]:
        """What `why -o json|yaml` prints."""
        return {
            "apiKey": {"namespace": self.namespace, "name": self.name},
            "refused": self.refused,
            "problems": list(self.problems),
            "scopes": [
                {
                    "kind": scope.kind,
                    "scope": scope.label,
                    "spend": scope.allowance.spend,
                    "maxBudget": scope.allowance.max_budget,
                    "remaining": scope.allowance.remaining,
                    "resetAt": iso_time(scope.allowance.reset_at),
                    "budgetDuration": scope.allowance.duration,
                    "refuses": scope.refuses,
                    "overrides": [
                        {
                            "name": item.name,
                            "increase": item.increase,
                            "expires": iso_time(item.expires),
                        }
                        for item in scope.overrides
                    ],
                }
                for scope in self.scopes
            ],
            "key": {
                "expires": iso_time(self.key_state.expires),
                "expired": self.key_state.expired,
                "blocked": self.key_state.blocked,
                "models": list(self.key_state.key_models),
                "teamModels": list(self.key_state.team_models),
                "allowedModels": (
                    None
                    if self.key_state.allowed_models is None
                    else list(self.key_state.allowed_models)
                ),
            },
            "lifts": [{"text": lift.text, "command": lift.command} for lift in self.lifts],
        }


def _named_scope(key: SubjectView) -> ScopeKind | None:
    """The scope the key's BudgetExceeded condition names, when it is True."""
    condition = key.conditions.get("BudgetExceeded")
    if condition is None or condition.status != "True":
        return None
    text = f"{condition.reason} {condition.message}".lower()
    for kind in ("global", "member", "team"):
        if kind in text:
            return kind
    return "key"


def _budget_spec(
    subject: SubjectView, budgets: Mapping[str, Mapping[str, Any] | None]
) -> Mapping[str, Any]:
    """The subject's budget spec: inline, or its referenced Budget's ({}: none, or missing)."""
    ref = subject.spec.get("budgetRef")
    if isinstance(ref, Mapping) and ref.get("name"):
        return _section(budgets.get(str(ref["name"])), "spec")
    inline = subject.spec.get("budget")
    return inline if isinstance(inline, Mapping) else {}


def _with_spec(allowance: Allowance, budget_spec: Mapping[str, Any]) -> Allowance:
    """Fill what a status does not show yet (a subject not synced) from its budget spec."""
    max_budget = allowance.max_budget
    if max_budget is None:
        max_budget = money(budget_spec.get("maxBudget"))
    duration = allowance.duration or budget_spec.get("budgetDuration")
    return Allowance(
        spend=allowance.spend,
        max_budget=max_budget,
        remaining=allowance.remaining,
        reset_at=allowance.reset_at,
        duration=str(duration) if duration else None,
    )


def _subject_scopes(
    subject: SubjectView, kind: ScopeKind, named: bool, budget_spec: Mapping[str, Any]
) -> list[Scope]:
    """A Team's or ApiKey's windows (the main one alone without status.windows)."""
    windows = subject.windows or (_with_spec(subject.allowance, budget_spec),)
    scopes = []
    for index, window in enumerate(windows):
        label = subject.ref if index == 0 else f"{subject.ref} ({window.duration} window)"
        # A condition names the scope, not the window: it marks the main one unless a
        # window's own numbers say which.
        refuses = window.exhausted or (named and index == 0 and not _any_exhausted(windows))
        scopes.append(Scope(kind, label, window, refuses, subject.overrides if index == 0 else ()))
    return scopes


def _any_exhausted(windows: Sequence[Allowance]) -> bool:
    return any(window.exhausted for window in windows)


def _member_scope(key: SubjectView, team: SubjectView, named: bool) -> Scope | None:
    """The team member's maxBudgetInTeam, when the key has a user and the team caps it."""
    user = key.spec.get("user")
    if not user:
        return None
    members = team.spec.get("members")
    member = next(
        (
            item
            for item in (members if isinstance(members, list) else [])
            if isinstance(item, Mapping) and item.get("user") == user
        ),
        None,
    )
    cap = money(member.get("maxBudgetInTeam")) if member is not None else None
    spend = team.member_spend.get(str(user))
    if cap is None and spend is None:
        return None
    allowance = Allowance(
        spend=spend,
        max_budget=cap,
        remaining=None if cap is None else max(0.0, cap - (spend or 0.0)),
        reset_at=team.allowance.reset_at,
        duration=team.allowance.duration,
    )
    return Scope("member", f"member {user} of {team.ref}", allowance, allowance.exhausted or named)


def _section(obj: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    found = (obj or {}).get(name)
    return found if isinstance(found, Mapping) else {}


def _global_scope(global_budget: GlobalBudget, named: bool) -> Scope:
    """The global Budget: its limits from spec, spend from its status when it has one."""
    spec = _section(global_budget.budget, "spec")
    status = _section(global_budget.budget, "status")
    spend = money(status.get("spend"))
    max_budget = money(status.get("maxBudget"))
    if max_budget is None:
        max_budget = money(spec.get("maxBudget"))
    remaining = money(status.get("remaining"))
    if remaining is None and spend is not None and max_budget is not None:
        remaining = max(0.0, max_budget - spend)
    allowance = Allowance(
        spend=spend,
        max_budget=max_budget,
        remaining=remaining,
        reset_at=parse_time(status.get("budgetResetAt")),
        duration=str(spec["budgetDuration"]) if spec.get("budgetDuration") else None,
    )
    label = f"global budget {global_budget.namespace}/{global_budget.name}"
    return Scope("global", label, allowance, allowance.exhausted or named)


def _models(spec: Mapping[str, Any]) -> tuple[str, ...]:
    models = spec.get("models")
    return tuple(str(model) for model in models) if isinstance(models, list) else ()


def key_state(key: SubjectView, team: SubjectView | None, now: datetime) -> KeyState:
    """Expiry (spec.expires or the Expired condition), blocked, and the model lists."""
    expires = parse_time(key.spec.get("expires"))
    return KeyState(
        expires=expires,
        expired=(expires is not None and expires <= now) or key.holds("Expired"),
        blocked=key.spec.get("blocked") is True or key.holds("Blocked"),
        key_models=_models(key.spec),
        team_models=_models(team.spec) if team is not None else (),
    )


def _until(moment: datetime | None, now: datetime) -> str:
    if moment is None or moment <= now:
        return "no reset (the window never resets)" if moment is None else "the next sync"
    return f"{iso_time(moment)} (in {time_until(moment, now)})"


def _refusal(scope: Scope, now: datetime) -> str:
    allowance = scope.allowance
    spent = (
        ""
        if allowance.spend is None
        else (f": spend {format_usd(allowance.spend)} of {format_usd(allowance.max_budget)} USD")
    )
    if allowance.reset_at is None:
        return f"budget exhausted at {scope.label}{spent}; it never resets"
    return f"budget exhausted at {scope.label}{spent}, until {_until(allowance.reset_at, now)}"


def _budget_field(subject: SubjectView, scope: Scope) -> tuple[str, str, str]:
    """(field, kind, name) to raise for a Team's or ApiKey's window."""
    ref = subject.spec.get("budgetRef")
    index = next((i for i, window in enumerate(subject.windows) if window is scope.allowance), 0)
    own = "maxBudget" if index == 0 else f"windows[{index - 1}].maxBudget"
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


def _lifts_for(
    scope: Scope, owner: SubjectView | None, global_budget: GlobalBudget | None, now: datetime
) -> list[Lift]:
    """What would lift one refusing scope: waiting, raising the limit, an override."""
    lifts = []
    reset_at = scope.allowance.reset_at
    if reset_at is not None and reset_at > now:
        lifts.append(
            Lift(f"wait until {_until(reset_at, now)}, when {scope.label}'s window resets")
        )
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
        user = scope.label.split(" ", 2)[1]
        lifts.append(
            Lift(
                f"raise spec.members[user={user}].maxBudgetInTeam of {owner.ref}",
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


def _state_lifts(key: SubjectView, state: KeyState) -> tuple[list[str], list[Lift]]:
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


def _missing_budgets(
    subjects: Sequence[SubjectView], budgets: Mapping[str, Mapping[str, Any] | None]
) -> list[str]:
    problems = []
    for subject in subjects:
        ref = subject.spec.get("budgetRef")
        if isinstance(ref, Mapping) and ref.get("name") and budgets.get(str(ref["name"])) is None:
            problems.append(f"Budget {ref['name']} (spec.budgetRef of {subject.ref}) was not found")
    return problems


def why_key(
    key: SubjectView,
    team: SubjectView | None,
    global_budget: GlobalBudget | None,
    now: datetime,
    *,
    budgets: Mapping[str, Mapping[str, Any] | None],
) -> WhyReport:
    """Which scopes refuse `key` now and what would lift each (`team` None: the key has
    no team, or its team was not found). `budgets` are the Budgets the key and its team
    reference, by name (None: not found)."""
    named = _named_scope(key)
    scopes: list[tuple[Scope, SubjectView | None]] = []
    problems = _missing_budgets([key] if team is None else [key, team], budgets)
    if global_budget is not None:
        if global_budget.budget is None:
            problems.append(
                f"the global budget {global_budget.namespace}/{global_budget.name} was not found"
            )
        else:
            scopes.append((_global_scope(global_budget, named == "global"), None))
    team_name = key.spec.get("team")
    if team is not None:
        scopes += [
            (scope, team)
            for scope in _subject_scopes(team, "team", named == "team", _budget_spec(team, budgets))
        ]
        member = _member_scope(key, team, named == "member")
        if member is not None:
            scopes.append((member, team))
    elif team_name:
        problems.append(f"team {team_name} was not found in namespace {key.namespace}")
    scopes += [
        (scope, key)
        for scope in _subject_scopes(key, "key", named == "key", _budget_spec(key, budgets))
    ]

    state = key_state(key, team, now)
    state_problems, lifts = _state_lifts(key, state)
    problems += state_problems
    for scope, owner in scopes:
        if scope.refuses:
            problems.append(_refusal(scope, now))
            lifts += _lifts_for(scope, owner, global_budget, now)
    exceeded = key.conditions.get("BudgetExceeded")
    if exceeded is not None and exceeded.status == "True" and not any(s.refuses for s, _ in scopes):
        problems.append(f"BudgetExceeded: {exceeded.message or exceeded.reason}")
    ready = key.conditions.get("Ready")
    if ready is not None and ready.status == "False":
        problems.append(f"not Ready ({ready.reason}): {ready.message}")
    return WhyReport(
        namespace=key.namespace,
        name=key.name,
        scopes=tuple(scope for scope, _ in scopes),
        key_state=state,
        problems=tuple(problems),
        lifts=tuple(lifts),
    )
