"""Key generation, Secret reading and the operator's flags."""

from __future__ import annotations

import argparse
import base64
import re
from pathlib import Path
from typing import Any

import pytest

from llmquota.operator.command import add_arguments, config_from_args
from llmquota.operator.config import HostPort
from llmquota.operator.rules.key_secrets import (
    SECRET_LABEL,
    generate_key,
    key_from_secret,
    owned_secret,
    secret_name_of,
)
from llmquota.operator.rules.mirrored_objects import MirrorSource
from llmquota.operator.services.mirroring import mirror_sources

OWNER = {
    "apiVersion": "llmquota.dev/v1alpha1",
    "kind": "ApiKey",
    "metadata": {"name": "bot", "uid": "u-1"},
}


def test_generated_keys_are_sk_and_32_url_safe_characters() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(re.fullmatch(r"sk-[A-Za-z0-9_-]{32}", key) for key in keys)


def test_secret_name_defaults_to_the_apikey_name() -> None:
    assert secret_name_of("bot", {}) == "bot"
    assert secret_name_of("bot", {"secretName": "bot-key"}) == "bot-key"


def test_owned_secret_round_trips_and_is_owned() -> None:
    secret = owned_secret(name="bot", namespace="ns", key="sk-abc", owner=OWNER)
    assert key_from_secret(secret) == "sk-abc"
    assert secret["metadata"]["labels"] == {SECRET_LABEL: "bot"}
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ApiKey", "u-1", True)


@pytest.mark.parametrize(
    "secret",
    [None, {}, {"data": {}}, {"data": {"key": ""}}, {"data": {"key": "!!!"}}],
)
def test_missing_or_broken_keys_read_as_none(secret: dict[str, Any] | None) -> None:
    assert key_from_secret(secret) is None


def test_string_data_and_whitespace() -> None:
    assert key_from_secret({"stringData": {"key": "sk-x\n"}}) == "sk-x"
    encoded = base64.b64encode(b"sk-y\n").decode()
    assert key_from_secret({"data": {"key": encoded}}) == "sk-y"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_to_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = config_from_args(
        parse(
            "--redis", "redis://r:6379/0",
            "--global-budget", "llmquota/global",
            "--namespace", "a", "--namespace", "b",
            "--health-listen", "127.0.0.1:18080",
            "--webhook-cert-dir", "/certs",
            "--sidecar-image", "img:1",
            "--upstream", "https://api.openai.com",
            "--upstream-secret", "openai:token",
            "--fail-open",
            "--status-interval", "2",
        )
    )  # fmt: skip
    assert config.global_budget == ("llmquota", "global")
    assert config.namespaces == ("a", "b")
    assert config.health_listen == HostPort("127.0.0.1", 18080)
    assert config.webhook_cert_dir == Path("/certs")
    assert config.sidecar is not None
    assert config.sidecar.upstream_secret == "openai"
    assert config.sidecar.upstream_secret_key == "token"
    assert config.sidecar.fail_open
    assert config.status_interval == 2.0
    assert config.peering is None


def test_environment_provides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://from-env")
    monkeypatch.setenv("LLMQUOTA_NAMESPACE", "x,y")
    monkeypatch.setenv("LLMQUOTA_PEERING", "llmquota")
    config = config_from_args(parse())
    assert config.redis_url == "redis://from-env"
    assert config.namespaces == ("x", "y")
    assert config.peering == "llmquota"
    assert config.webhook_cert_dir is None


def test_bad_flags_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("LLMQUOTA_REDIS", raising=False)
    with pytest.raises(ValueError, match="--redis"):
        config_from_args(parse())
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        config_from_args(parse("--redis", "redis://r", "--global-budget", "nope"))


def test_the_redis_password_secret_reaches_injected_sidecars_mirrored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = config_from_args(
        parse(
            "--redis", "redis://r:6379/0",
            "--sidecar-image", "img:1",
            "--config-namespace", "llmquota-system",
            "--sidecar-redis-password-secret", "llmquota-redis-password:redis-password",
        )
    )  # fmt: skip
    assert config.sidecar is not None
    assert config.sidecar.redis_password_secret == "llmquota-redis-password"
    assert config.sidecar.redis_password_secret_key == "redis-password"
    assert MirrorSource(
        "Secret", "llmquota-system", "llmquota-redis-password", ("redis-password",)
    ) in mirror_sources(config)
