"""Answers to a request, decided from plain data: key checks before admission, and the
admit script's result turned into headers or an OpenAI-style refusal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from llmquota.policy.admission import AdmissionCall
from llmquota.policy.limits import ResolvedPolicy, Scope, usd

__all__ = [
    "ADMITTED",
    "AUDIT_HEADER",
    "BUDGET_REMAINING_HEADER",
    "RESERVED_RETRY_MS",
    "Admitted",
    "AdmittedAnswer",
    "Audited",
    "Refused",
    "RefusedAnswer",
    "check_key",
    "check_key_standing",
    "format_money",
    "format_usd",
    "format_wait",
    "interpret_admit",
    "read_answer",
    "tightest_admitted",
]


@dataclass(frozen=True, slots=True)
class Refused:
    """A request turned away: HTTP status and OpenAI's error envelope fields."""

    status: int
    error_type: str
    code: str
    message: str
    limit: str = ""
    scope_label: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's error envelope."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": None,
                "code": self.code,
            }
        }


@dataclass(frozen=True, slots=True)
class Audited:
    """What an audited scope (enforcement: Audit) would have answered: the request was
    admitted anyway. `scope` is the scope that would have refused."""

    scope: Scope
    refusal: Refused

    @property
    def header(self) -> str:
        """`x-llmquota-audit`'s value: `<scope> would refuse: <reason>`, in printable
        ASCII (an end user's name comes from the request body)."""
        text = f"{self.scope.label} would refuse: {self.refusal.message}"
        return "".join(c if " " <= c <= "~" else "?" for c in text)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request let through, with the headers its response carries.

    `budget_left_nanos`: the tightest budget's remaining with this request's reservation
    held; `budget_room_nanos`: the same before it, from which the remaining after this
    request settles follows (`remaining_after`). None: no budget limits the key.
    """

    headers: dict[str, str]
    budget_left_nanos: int | None
    budget_room_nanos: int | None = None
    audit: Audited | None = None

    def remaining_after(self, cost_nanos: int) -> int | None:
        """The tightest budget's remaining once this request is settled at `cost_nanos`."""
        if self.budget_room_nanos is None:
            return None
        return max(self.budget_room_nanos - cost_nanos, 0)


def format_usd(amount_nanos: int) -> str:
    """USD to the nano, as the `x-llmquota-*` headers carry it."""
    return f"{usd(amount_nanos):.9f}"


def format_money(amount_usd: float) -> str:
    """USD for people: cents when that is enough, significant digits when it is tiny."""
    if amount_usd == 0 or abs(amount_usd) >= 0.01:
        return f"{amount_usd:.2f}"
    return f"{amount_usd:.3g}"


def format_wait(milliseconds: int) -> str:
    """A wait for people and for OpenAI-style reset headers: 950ms, 12s, 3h12m, 2d4h."""
    if milliseconds < 1000:
        return f"{max(milliseconds, 0)}ms"
    seconds = math.ceil(milliseconds / 1000)
    if seconds < 60:  # a per-minute limit's reset: what the general case below gives
        return f"{seconds}s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value]
    return "".join(shown[:2])


def _retry_after(milliseconds: int) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(milliseconds / 1000)))}


def check_key(policy: ResolvedPolicy, model: str, now: datetime) -> Refused | None:
    """Refusals that need no counters: incomplete policy, blocked, expired, model."""
    refused = check_key_standing(policy, now)
    if refused is not None:
        return refused
    if policy.models and model not in policy.models:
        return Refused(
            403,
            "permission_error",
            "model_not_allowed",
            f"Model {model!r} is not allowed for key {policy.key_name}; "
            f"allowed: {', '.join(policy.models)}.",
        )
    return None


def _subject(policy: ResolvedPolicy) -> str:
    """Whose requests a policy refuses: its key's, or (no key) a Team's keyless ones."""
    return f"Key {policy.key_name}" if policy.key_name else f"Keyless access of team {policy.team}"


def check_key_standing(policy: ResolvedPolicy, now: datetime) -> Refused | None:
    """Whether the key may be used at all (every endpoint asks): incomplete policy,
    blocked, expired."""
    if policy.refusal is not None:
        # A known key whose limits cannot be applied: a configuration problem on the
        # server's side (503), not a wrong key (401).
        return Refused(
            503,
            "service_unavailable",
            "policy_incomplete",
            f"{_subject(policy)} cannot be used until its limits resolve: "
            f"{policy.refusal.message} ({policy.refusal.reason}).",
        )
    if policy.blocked:
        return Refused(
            401,
            "authentication_error",
            "key_blocked",
            f"Key {policy.key_name} is blocked (spec.blocked is true).",
        )
    if policy.expires_at is not None and now >= policy.expires_at:
        return Refused(
            401,
            "authentication_error",
            "key_expired",
            f"Key {policy.key_name} expired at {policy.expires_at.isoformat()}.",
        )
    return None


BUDGET_REMAINING_HEADER = "x-llmquota-budget-remaining"
AUDIT_HEADER = "x-llmquota-audit"
"""On a response an audited scope would have refused: which scope, and why."""
# A budget whose spend is below its max is full only with what requests in flight have
# reserved: they settle (or are freed) within their answer's time, so retry soon.
RESERVED_RETRY_MS = 1000


class AdmittedAnswer(NamedTuple):
    """admit.lua's answer when it admits: `{1, <these fields in this order>}`; -1 is "no
    such limit". `budget_room`: the tightest budget's room before this request's
    reservation (`budget_left` is with it held). `audit`: the refusal an audited check
    would have made (the answer's further fields, as a refusal's after its 0)."""

    budget_left: int
    req_limit: int
    req_left: int
    tok_limit: int
    tok_left: int
    reset_ms: int
    budget_room: int = -1
    audit: RefusedAnswer | None = None


class RefusedAnswer(NamedTuple):
    """admit.lua's answer when it refuses: `{0, <these fields in this order>}`. `scope`
    indexes `AdmissionCall.scopes`; `current` and `maximum` are the limit's use and value
    (for `key_share`: what the key holds there and what it may hold); `reserved`: what
    requests in flight hold there (for `key_share`: this request's cost; for a Dynamic
    pool's limits: the keys active in it)."""

    scope: int
    limit: str
    current: int
    maximum: int
    retry_ms: int
    reserved: int
    window_index: int = 0  # which window of a budget: 0 the main one, n windows[n-1]


ADMITTED = 1
"""The first element of admit.lua's answer when it admits (0 when it refuses)."""


_ADMITTED_FIELDS = len(AdmittedAnswer._fields) - 1  # all but `audit`


def read_answer(result: Sequence[int | bytes | str]) -> AdmittedAnswer | RefusedAnswer:
    """admit.lua's raw answer with its positions named."""
    if int(result[0]) == ADMITTED:
        left, req_limit, req_left, tok_limit, tok_left, reset_ms, *room = map(
            int, result[1 : 1 + _ADMITTED_FIELDS]
        )
        audit = result[1 + _ADMITTED_FIELDS :]
        return AdmittedAnswer(
            left, req_limit, req_left, tok_limit, tok_left, reset_ms,
            budget_room=room[0] if room else -1,
            audit=_refused_answer(audit) if audit else None,
        )  # fmt: skip
    return _refused_answer(result[1:])


def _refused_answer(fields: Sequence[int | bytes | str]) -> RefusedAnswer:
    scope, limit, *amounts = fields
    name = limit.decode() if isinstance(limit, bytes) else str(limit)
    return RefusedAnswer(int(scope), name, *(int(value) for value in amounts))


def _window_label(scope: Scope, window_index: int) -> str:
    """What a refusal calls the scope: with the window's name when it is not the main
    one, e.g. `key alice (daily window)`."""
    if window_index == 0 or scope.budget is None:
        return scope.label
    return f"{scope.label} ({scope.budget.windows[window_index - 1].duration} window)"


def tightest_admitted(
    results: Sequence[Sequence[int | bytes | str]],
) -> list[int | str]:
    """One admitted answer from those of several slots (a Cluster admits per slot): each
    limit the tightest any slot reported, as admit.lua picks it among its own checks, and
    the first audited refusal in slot order (the widest scope's, as in one script)."""
    answers = [answer for answer in map(read_answer, results) if isinstance(answer, AdmittedAnswer)]

    def least(values: Sequence[int]) -> int:
        known = [value for value in values if value >= 0]
        return min(known, default=-1)

    def tightest_pair(pairs: Sequence[tuple[int, int]]) -> tuple[int, int]:
        limited = [(left, limit) for limit, left in pairs if limit >= 0]
        left, limit = min(limited, default=(-1, -1))
        return limit, left

    req_limit, req_left = tightest_pair([(a.req_limit, a.req_left) for a in answers])
    tok_limit, tok_left = tightest_pair([(a.tok_limit, a.tok_left) for a in answers])
    tightest = AdmittedAnswer(
        budget_left=least([a.budget_left for a in answers]),
        req_limit=req_limit,
        req_left=req_left,
        tok_limit=tok_limit,
        tok_left=tok_left,
        reset_ms=min(a.reset_ms for a in answers),
        budget_room=least([a.budget_room for a in answers]),
    )
    audit = next((a.audit for a in answers if a.audit is not None), None)
    return [ADMITTED, *tightest[:_ADMITTED_FIELDS], *(audit or ())]


def _budget_refusal(call: AdmissionCall, answer: RefusedAnswer) -> Refused:
    scope, limit = call.scopes[answer.scope], answer.limit
    label = _window_label(scope, answer.window_index)
    current, maximum, retry_ms, reserved = answer[2:6]
    what = "Budget" if limit == "max_budget" else "Model budget"
    in_flight = f" (+{format_money(usd(reserved))} reserved in flight)" if reserved else ""
    spend = (
        f"spend {format_money(usd(current))}{in_flight}, max budget {format_money(usd(maximum))}"
    )
    if current < maximum:
        return Refused(
            402,
            "budget_exceeded",
            "budget_exceeded",
            f"{what} is held by requests in flight for {label}: {spend}; their "
            f"reservations are released when they finish, retry in "
            f"{format_wait(RESERVED_RETRY_MS)}",
            limit=limit,
            scope_label=label,
            headers=_retry_after(RESERVED_RETRY_MS),
        )
    resets = "never resets" if retry_ms < 0 else f"resets in {format_wait(retry_ms)}"
    return Refused(
        402,
        "budget_exceeded",
        "budget_exceeded",
        f"{what} has been exceeded for {label}: {spend}, {resets}",
        limit=limit,
        scope_label=label,
        headers={} if retry_ms < 0 else _retry_after(retry_ms),
    )


_RATE_LIMIT_NAMES = {
    "rpm": "requests per minute (rpm)",
    "tpm": "tokens per minute (tpm)",
    "model_rpm": "requests per minute (rpm) for this model",
    "model_tpm": "tokens per minute (tpm) for this model",
    "dynamic_rpm": "share of the Dynamic rpm pool",
    "dynamic_tpm": "share of the Dynamic tpm pool",
    "max_parallel_requests": "requests in flight (maxParallelRequests)",
    "model_max_parallel_requests": "requests in flight (maxParallelRequests) for this model",
}


def interpret_admit(result: Sequence[int | bytes | str], call: AdmissionCall) -> Admitted | Refused:
    """The admit script's answer as headers or a refusal that names scope and limit."""
    answer = read_answer(result)
    if isinstance(answer, AdmittedAnswer):
        audit = answer.audit
        audited = (
            None if audit is None else Audited(call.scopes[audit.scope], _refusal(call, audit))
        )
        return _admitted(answer, audited)
    return _refusal(call, answer)


def _refusal(call: AdmissionCall, answer: RefusedAnswer) -> Refused:
    """A refusal that names the scope (and the window) and the limit."""
    scope = call.scopes[answer.scope]
    limit = answer.limit
    if limit in ("max_budget", "model_max_budget"):
        return _budget_refusal(call, answer)
    if limit == "key_share":
        return _key_share_refusal(
            _window_label(scope, answer.window_index),
            held=answer.current,
            allowed=answer.maximum,
            retry_ms=answer.retry_ms,
            cost=answer.reserved,
        )
    return Refused(
        429,
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        f"Rate limit exceeded for {scope.label}: {_RATE_LIMIT_NAMES.get(limit, limit)} "
        f"is {answer.maximum}, used {answer.current}; retry in {format_wait(answer.retry_ms)}",
        limit=limit,
        scope_label=scope.label,
        headers=_retry_after(answer.retry_ms),
    )


def _admitted(answer: AdmittedAnswer, audit: Audited | None) -> Admitted:
    headers: dict[str, str] = {}
    if answer.req_limit >= 0 or answer.tok_limit >= 0:
        reset = format_wait(answer.reset_ms)  # requests and tokens reset together
        if answer.req_limit >= 0:
            headers["x-ratelimit-limit-requests"] = str(answer.req_limit)
            headers["x-ratelimit-remaining-requests"] = str(answer.req_left)
            headers["x-ratelimit-reset-requests"] = reset
        if answer.tok_limit >= 0:
            headers["x-ratelimit-limit-tokens"] = str(answer.tok_limit)
            headers["x-ratelimit-remaining-tokens"] = str(answer.tok_left)
            headers["x-ratelimit-reset-tokens"] = reset
    budget_left = answer.budget_left
    if budget_left >= 0:
        headers[BUDGET_REMAINING_HEADER] = format_usd(budget_left)
    if audit is not None:
        headers[AUDIT_HEADER] = audit.header
    room = answer.budget_room
    return Admitted(
        headers=headers,
        budget_left_nanos=None if budget_left < 0 else budget_left,
        budget_room_nanos=None if room < 0 or budget_left < 0 else room,
        audit=audit,
    )


def _key_share_refusal(label: str, *, held: int, allowed: int, retry_ms: int, cost: int) -> Refused:
    """A request that does not fit in the share of a shared budget one key may hold, while
    that key already holds some of it, or another request holds less than its worst case
    (admission.KEY_SHARE; docs/architecture.md, "Reservations")."""
    why = (
        f"this key already holds {format_money(usd(held))} in flight there"
        if held
        else "another request there already holds less than its worst case"
    )
    return Refused(
        402,
        "budget_exceeded",
        "budget_exceeded",
        f"Budget of {label} cannot reserve this request now: it may cost up to "
        f"{format_money(usd(cost))} (its max_tokens, or the model's output limit, times n), "
        f"more than the {format_money(usd(max(allowed - held, 0)))} one key may hold in flight "
        f"there (half of what is left), and {why}; retry shortly, or lower max_tokens or n",
        limit="key_share",
        scope_label=label,
        headers=_retry_after(retry_ms),
    )
