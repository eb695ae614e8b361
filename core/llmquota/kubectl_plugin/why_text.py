"""The text `kubectl llmquota why` prints: a verdict, the scopes table, the key's state
and what would lift the refusal, laid out like `kubectl describe`."""

from __future__ import annotations

import textwrap
from datetime import datetime

from llmquota.kubectl_plugin.output import (
    NONE,
    format_table,
    format_usd,
    iso_time,
    time_until,
)
from llmquota.kubectl_plugin.why_report import KeyState, Scope, WhyReport

__all__ = ["why_text"]

NOT_SHOWN = (
    "rate limits (rpm, tpm, parallel requests) are counted per minute in Redis and not shown here"
)


def _scopes_table(scopes: tuple[Scope, ...], now: datetime) -> str:
    rows = [
        [
            scope.label,
            format_usd(scope.allowance.spend),
            format_usd(scope.allowance.max_budget),
            format_usd(scope.allowance.remaining),
            time_until(scope.allowance.reset_at, now),
            "yes" if scope.refuses else "no",
        ]
        for scope in scopes
    ]
    headers = ["SCOPE", "SPEND", "BUDGET", "REMAINING", "RESETS IN", "REFUSES"]
    return format_table(headers, rows)


def _models(state: KeyState) -> str:
    allowed = state.allowed_models
    shown = "all" if allowed is None else (", ".join(allowed) or "none")
    key = ", ".join(state.key_models) or "all"
    team = ", ".join(state.team_models) or "all"
    return f"{shown} (key: {key}; team: {team})"


def _overrides(scopes: tuple[Scope, ...]) -> list[str]:
    return [
        f"{item.name}: +{format_usd(item.increase)} USD on {scope.label}, "
        f"until {iso_time(item.expires) or NONE}"
        for scope in scopes
        for item in scope.overrides
    ]


def why_text(report: WhyReport, now: datetime) -> str:
    """The report as text."""
    subject = f"apikey/{report.name} in namespace {report.namespace}"
    lines = []
    if report.refused:
        lines.append(f"{subject} is REFUSED:")
        lines += [f"  - {problem}" for problem in report.problems]
    else:
        lines.append(f"{subject} is not refused by any budget, expiry or block.")
    lines.append(f"  ({NOT_SHOWN})")
    lines.append("")
    if report.scopes:
        lines.append(_scopes_table(report.scopes, now).rstrip("\n"))
        lines.append("")
    state = report.key_state
    expiry = NONE
    if state.expires is not None:
        when = "expired" if state.expired else f"in {time_until(state.expires, now)}"
        expiry = f"{iso_time(state.expires)} ({when})"
    lines.append(f"Expires:    {expiry}")
    lines.append(f"Blocked:    {'yes' if state.blocked else 'no'}")
    lines.append(f"Models:     {_models(state)}")
    overrides = _overrides(report.scopes)
    lines.append(f"Overrides:  {'; '.join(overrides) if overrides else NONE}")
    if report.lifts:
        lines.append("")
        lines.append("What would lift it:")
        for lift in report.lifts:
            lines.append(f"  - {lift.text}")
            if lift.command is not None:
                lines.append(textwrap.indent(lift.command, "      "))
    return "\n".join(lines) + "\n"
