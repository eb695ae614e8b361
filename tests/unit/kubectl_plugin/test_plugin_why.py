"""`why`: which scope refuses a key, decided from statuses, and what would lift it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from llmquota.kubectl_plugin.subjects import SubjectView, subject_view
from llmquota.kubectl_plugin.why import why_key
from llmquota.kubectl_plugin.why_report import GlobalBudget, WhyReport
from llmquota.kubectl_plugin.why_text import why_text

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
RESET = "2026-12-01T23:00:00Z"


def _subject(kind: str, name: str, spec: dict[str, Any], **status: Any) -> SubjectView:
    obj = {"metadata": {"name": name, "namespace": "ns"}, "spec": spec, "status": status}
    return subject_view(obj, kind)  # type: ignore[arg-type]


def _exceeded(reason: str, message: str = "") -> list[dict[str, str]]:
    return [{"type": "BudgetExceeded", "status": "True", "reason": reason, "message": message}]


def _why(
    key: SubjectView,
    team: SubjectView | None = None,
    global_budget: GlobalBudget | None = None,
    budgets: dict[str, Any] | None = None,
) -> WhyReport:
    return why_key(key, team, global_budget, NOW, budgets=budgets or {})


def _refusing(report: WhyReport) -> list[str]:
    return [scope.label for scope in report.scopes if scope.refuses]


def test_the_key_own_budget() -> None:
    key = _subject(
        "ApiKey", "bot", {"budget": {"maxBudget": 10, "budgetDuration": "1d"}},
        spend=10, maxBudget=10, remaining=0, budgetResetAt=RESET,
    )  # fmt: skip
    report = _why(key)
    assert report.refused
    assert _refusing(report) == ["apikey/bot"]
    assert report.problems == (
        "budget exhausted at apikey/bot: spend 10.00 of 10.00 USD, "
        "until 2026-12-01T23:00:00Z (in 14h)",
    )
    texts = [lift.text for lift in report.lifts]
    assert texts[0] == "wait until 2026-12-01T23:00:00Z (in 14h), when apikey/bot's window resets"
    assert texts[1] == "raise spec.budget.maxBudget of apikey/bot"
    assert report.lifts[1].command == "kubectl edit apikey bot -n ns"
    override = report.lifts[2].command
    assert override is not None
    manifest = yaml.safe_load(override.split("<<EOF\n")[1].split("EOF")[0])
    assert manifest == {
        "apiVersion": "llmquota.dev/v1alpha1",
        "kind": "BudgetOverride",
        "metadata": {"name": "bot-override", "namespace": "ns"},
        "spec": {
            "target": {"kind": "ApiKey", "name": "bot"},
            "increase": 10,
            "expires": RESET,
            "reason": "<why this increase is approved>",
        },
    }


def test_a_window_that_never_resets_gets_a_week_long_override() -> None:
    key = _subject("ApiKey", "bot", {"budget": {"maxBudget": 0}}, spend=0, maxBudget=0)
    report = _why(key)
    assert report.problems == ("budget exhausted at apikey/bot: spend 0 of 0 USD; it never resets",)
    assert not any(lift.text.startswith("wait") for lift in report.lifts)
    override = report.lifts[-1].command or ""
    assert 'expires: "2026-12-08T09:00:00Z"' in override
    assert "increase: 1  #" in override


def test_a_shared_budget_is_raised_on_the_budget() -> None:
    team = _subject("Team", "qa", {"budgetRef": {"name": "tier"}}, spend=5, maxBudget=5)
    key = _subject("ApiKey", "bot", {"team": "qa"})
    report = _why(key, team, budgets={"tier": {"spec": {"maxBudget": 5}}})
    assert _refusing(report) == ["team/qa"]
    raise_it = report.lifts[0]
    assert raise_it.text.startswith("raise spec.maxBudget of budget/tier (a shared Budget")
    assert raise_it.command == "kubectl edit budget tier -n ns"
    assert "target: {kind: Team, name: qa}" in (report.lifts[1].command or "")


def test_the_budget_spec_fills_in_a_status_not_synced_yet() -> None:
    team = _subject("Team", "qa", {"budgetRef": {"name": "tier"}})
    key = _subject("ApiKey", "bot", {"team": "qa", "budgetRef": {"name": "gone"}})
    report = _why(
        key,
        team,
        budgets={"tier": {"spec": {"maxBudget": 5, "budgetDuration": "30d"}}, "gone": None},
    )
    team_scope = report.scopes[0]
    assert (team_scope.allowance.max_budget, team_scope.allowance.duration) == (5, "30d")
    assert not team_scope.refuses
    assert report.problems == ("Budget gone (spec.budgetRef of apikey/bot) was not found",)


def test_a_later_window_refuses() -> None:
    windows = [
        {"budgetDuration": "30d", "maxBudget": 100, "spend": 2, "remaining": 98, "resetAt": RESET},
        {"budgetDuration": "1d", "maxBudget": 2, "spend": 2, "remaining": 0,
         "resetAt": "2026-12-02T00:00:00Z"},
    ]  # fmt: skip
    key = _subject(
        "ApiKey", "bot",
        {"budget": {"maxBudget": 100, "windows": [{"maxBudget": 2, "budgetDuration": "1d"}]}},
        spend=2, maxBudget=100, windows=windows, conditions=_exceeded("BudgetExhausted"),
    )  # fmt: skip
    report = _why(key)
    assert _refusing(report) == ["apikey/bot (1d window)"]
    assert report.lifts[1].text == "raise spec.budget.windows[0].maxBudget of apikey/bot"


def test_the_member_cap() -> None:
    team = _subject(
        "Team", "qa", {"members": [{"user": "ishaan", "maxBudgetInTeam": 0.5}]},
        spend=1, maxBudget=100, budgetResetAt=RESET, memberSpend={"ishaan": 0.5},
    )  # fmt: skip
    key = _subject("ApiKey", "bot", {"team": "qa", "user": "ishaan"})
    report = _why(key, team)
    assert _refusing(report) == ["member ishaan of team/qa"]
    texts = [lift.text for lift in report.lifts]
    assert texts[1] == "raise spec.members[user=ishaan].maxBudgetInTeam of team/qa"
    assert not any("BudgetOverride" in text for text in texts)


def test_the_condition_names_the_team_when_its_numbers_are_stale() -> None:
    team = _subject("Team", "qa", {}, spend=1, maxBudget=100)
    key = _subject(
        "ApiKey", "bot", {"team": "qa"},
        conditions=_exceeded("TeamBudgetExhausted", "team qa: spend 100 USD of maxBudget 100 USD"),
    )  # fmt: skip
    assert _refusing(_why(key, team)) == ["team/qa"]


def test_the_global_budget() -> None:
    key = _subject(
        "ApiKey", "bot", {},
        conditions=_exceeded("GlobalBudgetExhausted", "refused by global budget ops/all"),
    )  # fmt: skip
    everyone = GlobalBudget("ops", "all", {"spec": {"maxBudget": 1000, "budgetDuration": "30d"}})
    report = _why(key, global_budget=everyone)
    assert _refusing(report) == ["global budget ops/all"]
    assert report.scopes[0].allowance.max_budget == 1000
    assert [lift.command for lift in report.lifts] == ["kubectl edit budget all -n ops"]
    missing = _why(_subject("ApiKey", "bot", {}), global_budget=GlobalBudget("ops", "all", None))
    assert missing.problems == ("the global budget ops/all was not found",)


def test_a_condition_naming_a_scope_not_shown_is_still_reported() -> None:
    key = _subject("ApiKey", "bot", {}, conditions=_exceeded("Global", "refused globally"))
    assert _why(key).problems == ("BudgetExceeded: refused globally",)


def test_expired_blocked_and_not_ready() -> None:
    key = _subject(
        "ApiKey", "bot", {"team": "qa", "expires": "2026-11-01T00:00:00Z", "blocked": True},
        conditions=[{"type": "Ready", "status": "False", "reason": "TeamNotFound",
                     "message": "Team 'qa' not found"}],
    )  # fmt: skip
    report = _why(key)
    assert report.problems == (
        "team qa was not found in namespace ns",
        "the key expired at 2026-11-01T00:00:00Z",
        "the key is blocked (spec.blocked is true)",
        "not Ready (TeamNotFound): Team 'qa' not found",
    )
    commands = [lift.command for lift in report.lifts]
    assert commands == [
        'kubectl patch apikey bot -n ns --type merge -p \'{"spec":{"expires":null}}\'',
        'kubectl patch apikey bot -n ns --type merge -p \'{"spec":{"blocked":false}}\'',
    ]


def test_allowed_models() -> None:
    team = _subject("Team", "qa", {"models": ["a", "b"]})
    both = _why(_subject("ApiKey", "k", {"team": "qa", "models": ["b", "c"]}), team)
    assert both.key_state.allowed_models == ("b",)
    assert _why(_subject("ApiKey", "k", {"team": "qa"}), team).key_state.allowed_models == (
        "a", "b",
    )  # fmt: skip
    assert _why(_subject("ApiKey", "k", {})).key_state.allowed_models is None


def test_text_and_document() -> None:
    key = _subject(
        "ApiKey", "bot", {"expires": "2027-01-01T00:00:00Z"},
        spend=1, maxBudget=10, remaining=9, budgetResetAt=RESET,
        overrides=[{"name": "launch", "increase": 50, "expires": "2026-12-08T00:00:00Z"}],
    )  # fmt: skip
    report = _why(key)
    text = why_text(report, NOW)
    assert text.startswith("apikey/bot in namespace ns is not refused by any budget")
    assert "apikey/bot   1.00    10.00    9.00        14h         no" in text
    assert "Expires:    2027-01-01T00:00:00Z (in 30d)" in text
    assert "Overrides:  launch: +50.00 USD on apikey/bot, until 2026-12-08T00:00:00Z" in text
    document = report.document()
    assert document["refused"] is False
    assert document["scopes"][0]["overrides"] == [
        {"name": "launch", "increase": 50, "expires": "2026-12-08T00:00:00Z"}
    ]
    assert document["key"]["expires"] == "2027-01-01T00:00:00Z"


def test_names_of_the_key_and_team_do_not_name_a_scope() -> None:
    team = _subject("Team", "global-ops", {}, spend=1, maxBudget=100)
    exceeded = _exceeded("BudgetExhausted", "apikey team-bot of global-ops")
    key = _subject("ApiKey", "team-bot", {"team": "global-ops"}, conditions=exceeded)
    assert _refusing(_why(key, team)) == ["apikey/team-bot"]


def test_a_window_that_ended_after_the_last_sync() -> None:
    key = _subject(
        "ApiKey", "bot", {}, spend=10, maxBudget=10, budgetResetAt="2026-12-01T08:00:00Z"
    )
    report = _why(key)
    assert report.problems == (
        "budget exhausted at apikey/bot: spend 10.00 of 10.00 USD; its window ended at "
        "2026-12-01T08:00:00Z, after the last status sync",
    )
    assert not any(lift.text.startswith("wait") for lift in report.lifts)


def test_the_reason_names_the_scope_before_any_word_does() -> None:
    team = _subject("Team", "qa", {}, spend=1, maxBudget=100)
    exceeded = _exceeded("BudgetExhausted", "spend 5 USD (+5 USD reserved in flight) of team 10")
    key = _subject("ApiKey", "bot", {"team": "qa"}, spend=5, maxBudget=10, conditions=exceeded)
    # Admission counts what in-flight requests reserved: the status's spend is below max.
    assert _refusing(_why(key, team)) == ["apikey/bot"]
    member = _exceeded("MemberBudgetExhausted", "refused by member ishaan of team qa")
    key = _subject("ApiKey", "bot", {"team": "qa"}, conditions=member)
    assert _refusing(_why(key, team)) == []  # no member cap on the team to show
    assert _why(key, team).problems == ("BudgetExceeded: refused by member ishaan of team qa",)
