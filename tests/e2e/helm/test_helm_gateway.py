"""The chart's shared gateway (`gateway.enabled`): off by default; a Deployment running
`llmquota sidecar --workers N` and a Service in front of it."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
from tests.e2e.helm.test_helm_chart import (
    KUBERNETES_VERSION,
    RELEASE,
    find,
    helm_template,
    one,
    render,
)

pytestmark = pytest.mark.e2e

GATEWAY = f"{RELEASE}-llmquota-gateway"


def test_no_gateway_by_default(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir)
    assert not find(manifests, "Deployment", GATEWAY)
    assert not find(manifests, "Service", GATEWAY)


def test_gateway_deployment_and_service(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(
        helm_bin,
        chart_dir,
        set_values=(
            "gateway.enabled=true",
            "gateway.workers=3",
            "upstream.credentialSecret.name=openai",
            "upstream.credentialSecret.key=OPENAI_API_KEY",
            "failOpen=true",
        ),
    )
    deployment = one(manifests, "Deployment", GATEWAY)
    service = one(manifests, "Service", GATEWAY)
    for manifest in (deployment, service):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["llmquota", "sidecar"]
    args = container["args"]
    assert {"--listen=0.0.0.0:4000", "--health-listen=0.0.0.0:4001", "--workers=3"} <= set(args)
    assert "--upstream-key-file=/var/run/llmquota/upstream/key" in args
    assert "--fail-open" in args
    assert not any("redis" in arg for arg in args)  # the URL comes from a Secret
    [redis] = [env for env in container["env"] if env["name"] == "LLMQUOTA_REDIS"]
    assert redis["valueFrom"]["secretKeyRef"]["key"] == "url"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 4000, "health-0": 4001, "health-1": 4002, "health-2": 4003}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health-0"}
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["upstream-key"]["secret"] == {
        "secretName": "openai",
        "items": [{"key": "OPENAI_API_KEY", "path": "key"}],
    }
    assert pod["spec"]["automountServiceAccountToken"] is False
    # The Service selects the gateway's Pods, never the operator's.
    selector = service["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "gateway"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 4000, "targetPort": "http", "protocol": "TCP"}
    ]
    operator = one(manifests, "Deployment", f"{RELEASE}-llmquota")
    assert operator["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "operator"
    )


@pytest.mark.parametrize("assignment", ["gateway.workers=0", "gateway.wrokers=2"])
def test_bad_gateway_values_are_refused(helm_bin: Path, chart_dir: Path, assignment: str) -> None:
    result = helm_template(helm_bin, chart_dir, set_values=("gateway.enabled=true", assignment))
    assert result.returncode != 0
    assert "gateway" in result.stderr
