"""What each folder of examples/ promises in its README, as checks through the official
client. The same checks run against a standalone sidecar on the folder and against a
sidecar fed by the operator after `kubectl apply -f` of the folder; `EXAMPLES` names one
check per folder, and a folder without one fails the suite."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from tests.support.waiting import wait_until

__all__ = ["EXAMPLES", "ON_A_CLUSTER", "Example", "PodIdentity", "Reach", "Refusal", "StatusOf"]

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MANY = 15  # the READMEs' loops: enough requests to exhaust what they exhaust
Reach = Callable[[str], openai.OpenAI]
"""An official client for a key (the folder's Secret) through the sidecar under test."""


@dataclass(frozen=True)
class PodIdentity:
    """The Pod a keyless example's sidecar stands in: its README's `pod/` folder (the
    downward API files) and `--workload`; the Team whose workload policy it needs."""

    folder: str
    workload: str
    team: str


@dataclass(frozen=True)
class Example:
    """A folder's README promises: the keys its Secrets hold, and the check."""

    keys: tuple[str, ...]
    check: Callable[[Reach], Awaitable[None] | None]
    pod: PodIdentity | None = None


def _ask(client: openai.OpenAI, model: str = "gpt-4o-mini", **extra: object) -> int:
    """The status of one chat completion (200 or the refusal's)."""
    try:
        client.chat.completions.create(model=model, messages=MESSAGES, **extra)  # type: ignore[call-overload]
    except openai.APIStatusError as error:
        return error.status_code
    return 200


@dataclass(frozen=True)
class Refusal:
    """The first refusal of a run of requests, and how many were served before it."""

    served_before: int
    error: openai.APIStatusError

    @property
    def status(self) -> int:
        return self.error.status_code

    @property
    def body(self) -> dict[str, str]:
        body: dict[str, str] = self.error.response.json()["error"]
        return body

    @property
    def retry_after(self) -> int:
        return int(self.error.response.headers["retry-after"])


def _refused(
    client: openai.OpenAI, model: str = "gpt-4o-mini", *, within: int = MANY, **extra: object
) -> Refusal:
    """Send requests until one is refused (at most `within`)."""
    for served in range(within):
        try:
            client.chat.completions.create(model=model, messages=MESSAGES, **extra)  # type: ignore[call-overload]
        except openai.APIStatusError as error:
            return Refusal(served, error)
    pytest.fail(f"{within} requests all served")


GAUGE_TIMEOUT_S = 10.0


def _scrape(client: openai.OpenAI) -> str:
    url = str(client.base_url).removesuffix("/").removesuffix("/v1") + "/metrics"
    with urllib.request.urlopen(url) as response:
        return str(response.read().decode())


def _metric(client: openai.OpenAI, metric: str, **labels: str) -> float | None:
    """A sample of the sidecar's /metrics whose labels include `labels` (any namespace)."""
    for family in text_string_to_metric_families(_scrape(client)):
        for found in family.samples:
            if found.name == metric and labels.items() <= found.labels.items():
                return float(found.value)
    return None


async def _shows(client: openai.OpenAI, metric: str, value: float, **labels: str) -> None:
    """Wait until the sidecar's gauges (refreshed off the request path) show `value`."""

    async def shown() -> bool:
        return _metric(client, metric, **labels) == value

    try:
        await wait_until(shown, GAUGE_TIMEOUT_S)
    except AssertionError as error:
        raise AssertionError(
            f"{error}: {metric} {labels} != {value} in\n{_scrape(client)}"
        ) from error


def team_tiny_budget(reach: Reach) -> None:
    client = reach("sk-llmquota-example-tiny-budget")
    refusal = _refused(client)
    assert refusal.served_before == 1  # nothing was spent before the first
    assert (refusal.status, refusal.body["type"], refusal.body["code"]) == (
        402,
        "budget_exceeded",
        "budget_exceeded",
    )
    assert "team tiny-budget" in refusal.body["message"]
    assert "max budget 1e-09" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 86_400  # the one-day window


def _seconds_to_next_month() -> float:
    now = datetime.now(UTC)
    first = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return (first - now).total_seconds()


async def team_member_cap(reach: Reach) -> None:
    ishaan = reach("sk-llmquota-example-ishaan")
    refusal = _refused(ishaan)
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12  # "after roughly ten" replies of 0.00001 USD
    assert "member ishaan of team research" in refusal.body["message"]
    assert "max budget 0.0001" in refusal.body["message"]
    assert abs(refusal.retry_after - _seconds_to_next_month()) < 120  # the monthly window
    assert _ask(reach("sk-llmquota-example-krrish")) == 200  # the team is far from spent
    member = {"kind": "member", "name": "research/ishaan", "window": "monthly"}
    await _shows(ishaan, "llmquota_remaining_budget_usd", 0, **member)
    team = _metric(ishaan, "llmquota_remaining_budget_usd", kind="team", name="research")
    assert team is not None
    assert 9.99 < team < 10


def model_budgets(reach: Reach) -> None:
    client = reach("sk-llmquota-example-model-capped")
    refusal = _refused(client, "gpt-4o")
    assert (refusal.served_before, refusal.status) == (1, 402)
    message = refusal.body["message"]
    assert message.startswith("Model budget has been exceeded for key model-capped-key")
    assert "max budget 1e-06" in message
    assert _ask(client, "gpt-4o-mini") == 200
    not_allowed = _refused(client, "gpt-3.5-turbo")
    assert (not_allowed.status, not_allowed.body["code"]) == (403, "model_not_allowed")
    assert sorted(model.id for model in client.models.list()) == ["gpt-4o", "gpt-4o-mini"]


async def per_customer_budget(reach: Reach) -> None:
    client = reach("sk-llmquota-example-support-bot")
    refusal = _refused(client, user="customer-42")
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12  # "about ten" replies
    assert "end user customer-42 of team support-bot" in refusal.body["message"]
    assert "max budget 0.0001" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 3600  # the hour's window
    assert _ask(client, user="customer-7") == 200  # a counter of its own
    assert _ask(client) == 200  # without `user`: the team's budget only
    crossed = {"kind": "end_user", "name": "support-bot"}  # never the customer's name
    await _shows(client, "llmquota_soft_budget_crossings_total", 1, **crossed)


async def _early_in_a_minute() -> bool:
    return time.time() % 60 < 40


async def dynamic_tpm(reach: Reach) -> None:
    # The split is per minute: start early enough in one that it does not roll over.
    await wait_until(_early_in_a_minute, timeout_s=30, poll_s=0.5)
    prod, prod_2, dev = (reach(f"sk-llmquota-example-{name}") for name in ("prod", "prod-2", "dev"))
    for client in (prod, prod_2, dev):  # all three active this minute
        assert _ask(client, max_tokens=100) == 200
    shown = prod.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=100
    )
    assert shown.headers["x-ratelimit-limit-tokens"] == "450"  # prod's 900, split in two

    refusal = _refused(dev, max_tokens=100)
    assert (refusal.status, refusal.body["code"]) == (429, "rate_limit_exceeded")
    assert "key dev-key (Dynamic RateLimit shared-pool)" in refusal.body["message"]
    assert "share of the Dynamic tpm pool is 100" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 60
    assert _ask(prod, max_tokens=100) == 200  # prod keeps being admitted

    prod_refusal = _refused(prod_2, within=40, max_tokens=100)
    assert "share of the Dynamic tpm pool is 450" in prod_refusal.body["message"]


def budget_override(reach: Reach) -> None:
    refusal = _refused(reach("sk-llmquota-example-launch-bot"))
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12  # "about ten" replies under the raised cap
    assert "key launch-bot" in refusal.body["message"]
    assert "max budget 0.0001" in refusal.body["message"]  # 0.000100001, to 3 digits


async def keyless_workloads(reach: Reach) -> None:
    client = reach("sk-no-virtual-key")  # the openai client insists on some key
    refusal = _refused(client)
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12  # "about ten of them"
    assert "workload deployment/drafter of team support" in refusal.body["message"]
    assert "max budget 0.0001" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 3600  # within the hour
    served = {"workload": "deployment/drafter", "outcome": "served"}
    assert _metric(client, "llmquota_requests_total", **served) == refusal.served_before


async def multi_window(reach: Reach) -> None:
    client = reach("sk-llmquota-example-burst-bot")
    refusal = _refused(client)
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12  # "about ten" replies of 0.00001 USD
    assert "key burst-bot (1h window)" in refusal.body["message"]
    assert "max budget 0.0001" in refusal.body["message"]
    assert 0 < refusal.retry_after <= 3600  # the hour's reset, not the month's
    key = {"kind": "key", "name": "burst-bot"}
    await _shows(client, "llmquota_remaining_budget_usd", 0, window="1h", **key)

    async def month_nearly_whole() -> bool:  # once the last settle has released its hold
        month = _metric(client, "llmquota_remaining_budget_usd", window="30d", **key)
        return month is not None and 0.999 < month < 1

    await wait_until(month_nearly_whole, GAUGE_TIMEOUT_S)


def _seconds_to_midnight_in(zone: str) -> float:
    now = datetime.now(ZoneInfo(zone))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return (midnight - now).total_seconds()


def calendar_timezone(reach: Reach) -> None:
    refusal = _refused(reach("sk-llmquota-example-tokyo-bot"))
    assert refusal.status == 402
    assert 5 <= refusal.served_before <= 12
    assert "team tokyo-office" in refusal.body["message"]
    assert abs(refusal.retry_after - _seconds_to_midnight_in("Asia/Tokyo")) < 120


async def audit_rollout(reach: Reach) -> None:
    client = reach("sk-llmquota-example-rollout-bot")
    for sent in range(3):
        answer = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
        assert answer.http_response.status_code == 200  # every request is served
        audit = answer.headers.get("x-llmquota-audit")
        if sent == 0:
            assert audit is None
        else:
            assert audit is not None
            assert audit.startswith("key rollout-bot would refuse: Budget has been exceeded")
            assert "max budget 1e-09" in audit
    audited = {"kind": "key", "name": "rollout-bot"}
    assert _metric(client, "llmquota_audit_refusals_total", **audited) == 2
    await _shows(client, "llmquota_remaining_budget_usd", 0, enforcement="Audit", **audited)


EXAMPLES = {
    "team-tiny-budget": Example(("sk-llmquota-example-tiny-budget",), team_tiny_budget),
    "team-member-cap": Example(
        ("sk-llmquota-example-ishaan", "sk-llmquota-example-krrish"), team_member_cap
    ),
    "model-budgets": Example(("sk-llmquota-example-model-capped",), model_budgets),
    "per-customer-budget": Example(("sk-llmquota-example-support-bot",), per_customer_budget),
    "dynamic-tpm": Example(
        tuple(f"sk-llmquota-example-{name}" for name in ("prod", "prod-2", "dev")), dynamic_tpm
    ),
    "budget-override": Example(("sk-llmquota-example-launch-bot",), budget_override),
    "keyless-workloads": Example(
        (), keyless_workloads, PodIdentity("pod", "deployment/drafter", "support")
    ),
    "multi-window": Example(("sk-llmquota-example-burst-bot",), multi_window),
    "calendar-timezone": Example(("sk-llmquota-example-tokyo-bot",), calendar_timezone),
    "audit-rollout": Example(("sk-llmquota-example-rollout-bot",), audit_rollout),
}
"""Folder of examples/ -> its keys and its README's promises."""


StatusOf = Callable[[str, str], dict[str, Any]]
"""`status_of(kind, name)`: the object's `status` on the API server ({} until written)."""


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def tiny_budget_status(status_of: StatusOf) -> bool:
    team = status_of("team", "tiny-budget")
    return (
        _condition(team, "BudgetExceeded").get("status") == "True"
        and float(team.get("spend", 0)) > 1e-9
        and bool(team.get("budgetResetAt"))
    )


def member_cap_status(status_of: StatusOf) -> bool:
    member_spend = status_of("team", "research").get("memberSpend", {})
    return (
        float(member_spend.get("ishaan", 0)) >= 0.0001 and float(member_spend.get("krrish", 0)) > 0
    )


def model_budgets_status(status_of: StatusOf) -> bool:
    model_spend = status_of("apikey", "model-capped-key").get("modelSpend", {})
    return (
        float(model_spend.get("gpt-4o", 0)) > 1e-6 and float(model_spend.get("gpt-4o-mini", 0)) > 0
    )


def per_customer_status(status_of: StatusOf) -> bool:
    return float(status_of("team", "support-bot").get("spend", 0)) > 0.0001


def dynamic_tpm_status(status_of: StatusOf) -> bool:
    return status_of("ratelimit", "shared-pool").get("subjects") == 3


def budget_override_status(status_of: StatusOf) -> bool:
    override = status_of("budgetoverride", "launch-week")
    listed = status_of("apikey", "launch-bot").get("overrides", [])
    return (
        override.get("active") is True
        and _condition(override, "Active").get("reason") == "Applied"
        and [entry["name"] for entry in listed] == ["launch-week"]
    )


def keyless_status(status_of: StatusOf) -> bool:
    spent = status_of("team", "support").get("workloadSpend", {})
    return float(spent.get("deployment/drafter", 0)) >= 0.0001


def multi_window_status(status_of: StatusOf) -> bool:
    key = status_of("apikey", "burst-bot")
    windows = key.get("windows", [])
    return (
        [window["budgetDuration"] for window in windows] == ["30d", "1h"]
        and windows[1]["remaining"] == 0
        and key.get("tightestWindow", {}).get("budgetDuration") == "1h"
        and _condition(key, "BudgetExceeded").get("message", "").startswith("1h window:")
    )


def calendar_timezone_status(status_of: StatusOf) -> bool:
    reset = status_of("team", "tokyo-office").get("budgetResetAt") or ""
    return reset.endswith("T15:00:00Z")  # midnight in Tokyo


def audit_rollout_status(status_of: StatusOf) -> bool:
    exceeded = _condition(status_of("apikey", "rollout-bot"), "BudgetExceeded")
    return exceeded.get("status") == "True" and exceeded.get("message", "").endswith(
        "enforcement Audit: reported, requests are not refused"
    )


ON_A_CLUSTER: dict[str, Callable[[StatusOf], bool]] = {
    "team-tiny-budget": tiny_budget_status,
    "team-member-cap": member_cap_status,
    "model-budgets": model_budgets_status,
    "per-customer-budget": per_customer_status,
    "dynamic-tpm": dynamic_tpm_status,
    "budget-override": budget_override_status,
    "keyless-workloads": keyless_status,
    "multi-window": multi_window_status,
    "calendar-timezone": calendar_timezone_status,
    "audit-rollout": audit_rollout_status,
}
"""Folder -> what its README says `kubectl get` shows once its requests were sent."""
