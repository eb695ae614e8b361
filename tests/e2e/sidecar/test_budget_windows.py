"""Several windows, calendar windows in a time zone and audit mode, through the sidecar
with the official openai client."""

from __future__ import annotations

import math
import time
import urllib.request
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.sidecar.processes import ClientFactory, Sidecar, team_and_key
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
AUDIT_HEADER = "x-llmquota-audit"


def ask(client: openai.OpenAI) -> openai.APIStatusError | dict[str, str]:
    """One small chat completion: the refusal, or the served response's headers."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=4
        )
    except openai.APIStatusError as error:
        return error
    return dict(raw.headers)


def first_refusal(client: openai.OpenAI, within: int = 10) -> tuple[int, openai.APIStatusError]:
    """How many requests were served before the first refusal, and the refusal."""
    for served in range(within):
        answer = ask(client)
        if isinstance(answer, openai.APIStatusError):
            return served, answer
    pytest.fail(f"{within} requests all served")


def metric(sidecar: Sidecar, name: str, /, **labels: str) -> float | None:
    with urllib.request.urlopen(f"{sidecar.url}/metrics") as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


async def test_a_request_must_fit_every_window_and_the_402_names_the_one_that_refused(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    key = "sk-windows-0001"
    budget = "{maxBudget: 5, budgetDuration: 30d, windows: [{maxBudget: 1e-9, budgetDuration: 1h}]}"
    sidecar.apply(
        "windows-key",
        team_and_key("windows-team", "windows-key", key, key_fields=f"budget: {budget}"),
        key,
    )
    served, refusal = first_refusal(clients(key))
    assert served == 1  # the first request spends the hour's billionth of a dollar
    assert refusal.status_code == 402
    body = refusal.response.json()["error"]
    assert (body["type"], body["code"]) == ("budget_exceeded", "budget_exceeded")
    assert "key windows-key (1h window)" in body["message"]
    assert "max budget 1e-09" in body["message"]
    # The hour's Retry-After, not the 30 days' of the main window.
    assert 0 < int(refusal.response.headers["retry-after"]) <= 3600

    # One gauge per window, named by its duration.
    subject = {"kind": "key", "name": "windows-key", "enforcement": "Enforce"}

    async def both_windows_shown() -> bool:
        hour = metric(sidecar, "llmquota_remaining_budget_usd", window="1h", **subject)
        month = metric(sidecar, "llmquota_remaining_budget_usd", window="30d", **subject)
        return hour == 0 and month is not None and 4.99 < month < 5

    await wait_until(both_windows_shown, timeout_s=10)


def test_a_daily_window_resets_at_midnight_in_its_time_zone(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    key = "sk-calendar-0001"
    zone = "Pacific/Kiritimati"  # UTC+14: its midnight is far from UTC's and the host's
    budget = f"{{maxBudget: 1e-9, budgetDuration: daily, timeZone: {zone}}}"
    sidecar.apply(
        "calendar-key",
        team_and_key("calendar-team", "calendar-key", key, key_fields=f"budget: {budget}"),
        key,
    )
    served, refusal = first_refusal(clients(key))
    assert (served, refusal.status_code) == (1, 402)
    now = datetime.now(ZoneInfo(zone))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    expected = math.ceil((midnight - now).total_seconds())
    assert abs(int(refusal.response.headers["retry-after"]) - expected) <= 5
    assert "resets in" in refusal.response.json()["error"]["message"]


async def test_an_audited_budget_serves_what_it_would_refuse_and_says_so(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    key = "sk-audit-0001"
    budget = "{maxBudget: 1e-9, budgetDuration: 1d, enforcement: Audit}"
    sidecar.apply(
        "audit-key",
        team_and_key("audit-team", "audit-key", key, key_fields=f"budget: {budget}"),
        key,
    )
    client = clients(key)
    first = ask(client)
    assert isinstance(first, dict)
    assert AUDIT_HEADER not in first  # nothing spent yet: nothing to refuse
    for _ in range(3):
        answer = ask(client)
        assert isinstance(answer, dict), answer  # served, never refused
        assert answer[AUDIT_HEADER].startswith("key audit-key would refuse: Budget has been ")
        assert "max budget 1e-09" in answer[AUDIT_HEADER]
    labels = {"kind": "key", "name": "audit-key"}
    assert metric(sidecar, "llmquota_audit_refusals_total", **labels) == 3


async def test_an_audited_rate_limit_serves_what_it_would_refuse_and_an_enforced_one_still_refuses(
    sidecar: Sidecar, clients: ClientFactory
) -> None:
    key = "sk-audit-rpm-0001"
    sidecar.apply(
        "audit-rpm",
        team_and_key(
            "audit-rpm-team",
            "audit-rpm-key",
            key,
            team_spec="{rateLimit: {rpm: 3}}",
            key_fields="rateLimit: {rpm: 1, enforcement: Audit}",
        ),
        key,
    )
    client = clients(key)

    async def minute_is_young() -> bool:
        return time.time() % 60 < 40

    await wait_until(minute_is_young, timeout_s=30, poll_s=0.5)
    assert isinstance(ask(client), dict)
    for _ in range(2):
        answer = ask(client)
        assert isinstance(answer, dict), answer
        assert answer[AUDIT_HEADER].startswith("key audit-rpm-key would refuse: Rate limit ")
        assert "requests per minute (rpm) is 1" in answer[AUDIT_HEADER]
    refused = ask(client)  # the team's rpm of 3 is enforced
    assert isinstance(refused, openai.APIStatusError)
    assert refused.status_code == 429
    assert "team audit-rpm-team" in refused.response.json()["error"]["message"]
