"""`kubectl llmquota why apikey/NAME`: which scope refuses a key and until when, decided
from the objects as read (pure: no I/O, `now` is given); `lifts` says what would lift it.

A request is checked against every scope that applies, widest first, as the sidecar's
admission does: the global budget, the key's team, the team member's cap, the key. A
scope refuses when its status shows spend at or over its maxBudget (the operator's and
the sidecar's rule), or when the key's own BudgetExceeded condition names it (the
operator names the scope that refuses a key in the condition's reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llmquota.kubectl_plugin.lifts import scope_lifts, state_lifts
from llmquota.kubectl_plugin.output import format_usd, iso_time, until
from llmquota.kubectl_plugin.subjects import (
    Allowance,
    SubjectView,
    money,
    parse_time,
)
from llmquota.kubectl_plugin.why_report import (
    GlobalBudget,
    KeyState,
    Scope,
    ScopeKind,
    WhyReport,
)

__all__ = ["REFUSAL_REASONS", "key_state", "why_key"]

REFUSAL_REASONS: dict[str, ScopeKind] = {
    "GlobalBudgetExhausted": "global",
    "TeamBudgetExhausted": "team",
    "MemberBudgetExhausted": "member",
    "BudgetExhausted": "key",
}
"""The reasons of an ApiKey's BudgetExceeded condition, and the scope each names."""


def _named_scope(key: SubjectView) -> ScopeKind | None:
    """The scope the key's BudgetExceeded condition names, when it is True: by its reason
    (`REFUSAL_REASONS`), else by a scope word in its reason or message (the key's and its
    team's names left out: a team may be called global-ops)."""
    condition = key.conditions.get("BudgetExceeded")
    if condition is None or condition.status != "True":
        return None
    if condition.reason in REFUSAL_REASONS:
        return REFUSAL_REASONS[condition.reason]
    text = f"{condition.reason} {condition.message}".lower()
    for name in (key.name, key.team):
        if name:
            text = text.replace(name.lower(), "")
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
        overrides = subject.overrides if index == 0 else ()
        scopes.append(Scope(kind, label, window, refuses, overrides, window=index))
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
    label = f"member {user} of {team.ref}"
    return Scope("member", label, allowance, allowance.exhausted or named, user=str(user))


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


def _refusal(scope: Scope, now: datetime) -> str:
    allowance = scope.allowance
    spent = (
        ""
        if allowance.spend is None
        else (f": spend {format_usd(allowance.spend)} of {format_usd(allowance.max_budget)} USD")
    )
    reset_at = allowance.reset_at
    if reset_at is None:
        return f"budget exhausted at {scope.label}{spent}; it never resets"
    if reset_at <= now:
        return (
            f"budget exhausted at {scope.label}{spent}; its window ended at "
            f"{iso_time(reset_at)}, after the last status sync"
        )
    return f"budget exhausted at {scope.label}{spent}, until {until(reset_at, now)}"


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
    state_problems, lifts = state_lifts(key, state)
    problems += state_problems
    for scope, owner in scopes:
        if scope.refuses:
            problems.append(_refusal(scope, now))
            lifts += scope_lifts(scope, owner, global_budget, now)
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
