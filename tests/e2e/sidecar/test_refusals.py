"""Refusals through the official client: keys, models, rate limits, bad bodies."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.sidecar.processes import ClientFactory, Sidecar, team_and_key

pytestmark = pytest.mark.e2e

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def refusal(client: openai.OpenAI, model: str = "gpt-4o-mini") -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=model, messages=MESSAGES)
    return refused.value


def test_unknown_key_is_401_invalid_api_key(sidecar: Sidecar, clients: ClientFactory) -> None:
    error = refusal(clients("sk-nobody-has-this"))
    assert error.status_code == 401
    assert error.response.json()["error"]["code"] == "invalid_api_key"
    assert error.response.json()["error"]["type"] == "authentication_error"


def test_expired_key_is_401_key_expired(sidecar: Sidecar, clients: ClientFactory) -> None:
    key = "sk-expired-0001"
    sidecar.apply(
        "expired",
        team_and_key("old-team", "old-key", key, key_fields='expires: "2020-01-01T00:00:00Z"'),
        key,
    )
    error = refusal(clients(key))
    assert error.status_code == 401
    assert error.response.json()["error"]["code"] == "key_expired"


@pytest.mark.parametrize(
    ("key_fields", "code"),
    [
        pytest.param('expires: "2020-01-01T00:00:00Z"', "key_expired", id="expired"),
        pytest.param("blocked: true", "key_blocked", id="blocked"),
    ],
)
def test_listing_models_with_a_dead_key_is_401(
    sidecar: Sidecar, clients: ClientFactory, key_fields: str, code: str
) -> None:
    name = "list-" + code.replace("_", "-")
    key = f"sk-models-{name}"
    sidecar.apply(name, team_and_key(name, name, key, key_fields=key_fields), key)
    with pytest.raises(openai.AuthenticationError) as refused:
        clients(key).models.list()
    assert refused.value.status_code == 401
    assert refused.value.response.json()["error"]["code"] == code


def test_model_not_allowed_is_403(sidecar: Sidecar, clients: ClientFactory) -> None:
    key = "sk-models-0001"
    sidecar.apply(
        "models",
        team_and_key("mini-team", "mini-key", key, team_spec="{models: [gpt-4o-mini]}"),
        key,
    )
    error = refusal(clients(key), model="gpt-4o")
    assert error.status_code == 403
    body = error.response.json()["error"]
    assert (body["type"], body["code"]) == ("permission_error", "model_not_allowed")
    assert "gpt-4o-mini" in body["message"]
    listed = [model.id for model in clients(key).models.list()]
    assert listed == ["gpt-4o-mini"]


def test_rate_limit_429_and_headers(sidecar: Sidecar, clients: ClientFactory) -> None:
    key = "sk-rpm-0001"
    sidecar.apply(
        "rpm",
        team_and_key(
            "rpm-team",
            "rpm-key",
            key,
            key_fields="rateLimit: {rpm: 1, tpm: 100000}, budget: {maxBudget: 5}",
        ),
        key,
    )
    # max_tokens: without it the reservation is the model's output limit (128k tokens).
    served = clients(key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=16
    )
    headers = served.headers
    assert headers["x-ratelimit-limit-requests"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert 0 < int(headers["x-ratelimit-remaining-tokens"]) < 100000
    assert headers["x-ratelimit-reset-requests"]
    assert 4.99 < float(headers["x-llmquota-budget-remaining"]) <= 5
    assert len(headers["x-request-id"]) == 32
    error = refusal(clients(key))
    assert error.status_code == 429
    assert error.response.json()["error"]["code"] == "rate_limit_exceeded"
    assert "rpm" in error.response.json()["error"]["message"]
    assert 1 <= int(error.response.headers["retry-after"]) <= 60


def test_malformed_body_is_400(sidecar: Sidecar, clients: ClientFactory) -> None:
    key = "sk-body-0001"
    sidecar.apply("body", team_and_key("body-team", "body-key", key), key)
    request = urllib.request.Request(
        f"{sidecar.url}/chat/completions",
        data=b"{not json",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    with refused.value as response:
        assert response.code == 400
        assert json.loads(response.read())["error"]["type"] == "invalid_request_error"
    error = refusal(clients(key), model="no-such-model-anywhere")
    assert error.status_code == 400
    assert "no-such-model-anywhere" in error.response.json()["error"]["message"]
    assert "--pricing" in error.response.json()["error"]["message"]
