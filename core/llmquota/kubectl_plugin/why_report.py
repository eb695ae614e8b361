"""What `kubectl llmquota why` finds: the scopes a key's requests count against, the
key's own state, and what would lift a refusal; plain data, with the `-o json|yaml`
document."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from llmquota.kubectl_plugin.output import iso_time
from llmquota.kubectl_plugin.subjects import Allowance, OverrideView

__all__ = ["GlobalBudget", "KeyState", "Lift", "Scope", "ScopeKind", "WhyReport"]

ScopeKind = Literal["global", "team", "member", "key"]


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
    window: int = 0
    """Which of the subject's windows (0: the main one, i: spec...windows[i-1])."""
    user: str | None = None
    """The team member, for a member scope."""


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
