"""The sidecar injection of the mutating webhook, as a pure function."""

from __future__ import annotations

from llmquota.operator.config import SidecarConfig
from llmquota.operator.injection import SIDECAR_NAME, injected_spec, wants_injection

CONFIG = SidecarConfig(
    image="ghcr.io/llmquota/llmquota:0.1.0",
    redis_url="redis://redis:6379/0",
    upstream="https://api.openai.com",
    upstream_secret="openai",
    upstream_secret_key="api-key",
    pricing_config_map="llmquota-pricing",
    fail_open=True,
)
POD_SPEC = {
    "containers": [
        {"name": "app", "image": "app:1", "env": [{"name": "OPENAI_BASE_URL", "value": "x"}]}
    ],
    "volumes": [{"name": "data", "emptyDir": {}}],
}


def test_only_annotated_pods_want_injection() -> None:
    assert wants_injection({"llmquota.dev/inject": "true"})
    assert not wants_injection({"llmquota.dev/inject": "false"})
    assert not wants_injection({})


def test_sidecar_volumes_and_base_url_are_added() -> None:
    injected = injected_spec(POD_SPEC, CONFIG)
    assert injected is not None
    app, sidecar = injected["containers"]
    assert app["env"] == [{"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:4000/v1"}]
    assert sidecar["name"] == SIDECAR_NAME
    assert sidecar["image"] == CONFIG.image
    assert sidecar["args"] == [
        "sidecar",
        "--listen",
        "127.0.0.1:4000",
        "--redis",
        "redis://redis:6379/0",
        "--upstream",
        "https://api.openai.com",
        "--upstream-key-file",
        "/var/run/llmquota/upstream/api-key",
        "--fail-open",
        "--pricing",
        "/etc/llmquota/pricing.yaml",
    ]
    assert [v["name"] for v in injected["volumes"]] == [
        "data",
        "llmquota-upstream",
        "llmquota-pricing",
    ]
    assert injected["volumes"][1]["secret"]["secretName"] == "openai"
    # The app containers never see the upstream credential.
    assert "volumeMounts" not in app


def test_injection_is_idempotent() -> None:
    injected = injected_spec(POD_SPEC, CONFIG)
    assert injected is not None
    assert injected_spec({**POD_SPEC, **injected}, CONFIG) is None


def test_minimal_config_has_no_optional_volumes_or_flags() -> None:
    injected = injected_spec(POD_SPEC, SidecarConfig(image="i", redis_url="redis://r"))
    assert injected is not None
    sidecar = injected["containers"][-1]
    assert sidecar["args"] == ["sidecar", "--listen", "127.0.0.1:4000", "--redis", "redis://r"]
    assert [v["name"] for v in injected["volumes"]] == ["data"]
