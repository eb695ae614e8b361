"""Mirrored sidecar configuration: the copies, their updates, and the injected settings."""

from __future__ import annotations

from llmquota.operator.config import SidecarConfig
from llmquota.operator.injection import injected_spec
from llmquota.operator.rules.mirrored_objects import (
    MirrorSource,
    is_mirror_of,
    mirror_body,
    mirror_patch,
    sidecar_with_settings,
)

SECRET = MirrorSource("Secret", "llmquota-system", "openai", ("api-key",))
CONFIG_MAP = MirrorSource("ConfigMap", "llmquota-system", "llmquota-sidecar")
SIDECAR = SidecarConfig(image="llmquota:1", redis_url="redis://redis:6379/0")


def test_a_secret_copy_has_only_the_credential_and_no_owner() -> None:
    found = {
        "metadata": {"name": "openai", "namespace": "llmquota-system", "uid": "u1",
                     "resourceVersion": "7", "labels": {"team": "platform"}},
        "type": "Opaque",
        "data": {"api-key": "c2stMQ==", "other": "eA=="},
    }  # fmt: skip
    copy = mirror_body(SECRET, found, "apps")
    assert copy == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "openai",
            "namespace": "apps",
            "labels": {"app.kubernetes.io/managed-by": "llmquota"},
            "annotations": {"llmquota.dev/mirrored-from": "llmquota-system/openai"},
        },
        "data": {"api-key": "c2stMQ=="},
        "type": "Opaque",
    }
    assert is_mirror_of(copy, SECRET)
    assert not is_mirror_of(copy, CONFIG_MAP)
    assert not is_mirror_of({"metadata": {"name": "openai"}}, SECRET)


def test_a_copy_is_patched_only_where_its_source_changed() -> None:
    source = {"data": {"pricing.yaml": "a", "fail-open": "true"}}
    copy = mirror_body(CONFIG_MAP, source, "apps")
    assert mirror_patch(copy, copy) == {}
    changed = mirror_body(CONFIG_MAP, {"data": {"pricing.yaml": "b"}}, "apps")
    assert mirror_patch(copy, changed) == {"data": {"pricing.yaml": "b", "fail-open": None}}


def test_resources_and_fail_open_come_from_the_config_map() -> None:
    config_map = {
        "data": {
            "fail-open": "true",
            "resources.yaml": "requests:\n  cpu: 50m\nlimits:\n  memory: 256Mi\n",
        }
    }
    sidecar = sidecar_with_settings(SIDECAR, config_map)
    assert sidecar.fail_open
    assert sidecar.resources == {"requests": {"cpu": "50m"}, "limits": {"memory": "256Mi"}}
    injected = injected_spec({"containers": [{"name": "app"}]}, sidecar)
    assert injected is not None
    container = injected["initContainers"][0]
    assert container["resources"] == sidecar.resources
    assert "--fail-open" in container["args"]


def test_without_the_config_map_the_flags_apply() -> None:
    assert sidecar_with_settings(SIDECAR, None) == SIDECAR
    broken = {"data": {"resources.yaml": "[unclosed", "fail-open": "false"}}
    assert sidecar_with_settings(SIDECAR, broken) == SIDECAR
    injected = injected_spec({"containers": [{"name": "app"}]}, SIDECAR)
    assert injected is not None
    assert "resources" not in injected["initContainers"][0]
