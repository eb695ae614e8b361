"""The chart installed once per session on the real node: every test module shares it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from tests.cluster.workloads import (
    APPS,
    RELEASE,
    SYSTEM_NAMESPACE,
    UPSTREAM_KEY,
    UPSTREAM_URL,
    apply,
    fake_upstream,
    helm,
    namespace,
)
from tests.support.kube_apiserver import REPO_ROOT, KubeAPIServer
from tests.support.kube_node import KubeCluster

__all__ = ["Installed", "diagnose"]


@dataclass(frozen=True)
class Installed:
    cluster: KubeCluster
    image: str

    @property
    def api(self) -> KubeAPIServer:
        return self.cluster.api


@pytest.fixture(scope="session")
def installed(kube_cluster: KubeCluster) -> Installed:
    """The fake upstream, then the chart, installed and `--wait`ed for."""
    api, images = kube_cluster.api, kube_cluster.images
    image_repository, image_tag = images.llmquota.rsplit(":", 1)
    apply(api, *fake_upstream(images.llmquota), namespace(SYSTEM_NAMESPACE), namespace(APPS))
    apply(
        api,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "upstream-key", "namespace": SYSTEM_NAMESPACE},
            "stringData": {"api-key": UPSTREAM_KEY},
        },
    )
    installed = helm(
        api, "install", RELEASE, str(REPO_ROOT / "charts" / "llmquota"),
        "--namespace", SYSTEM_NAMESPACE,
        "--set", f"image.repository={image_repository}",
        "--set", f"image.tag={image_tag}",
        "--set", f"redis.internal.image={images.redis}",
        "--set", "redis.internal.persistence.enabled=false",
        "--set", f"upstream.url={UPSTREAM_URL}",
        "--set", "upstream.credentialSecret.name=upstream-key",
        # So that a webhook the API server cannot call fails Pod creation loudly.
        "--set", "webhook.failurePolicy=Fail",
        "--set", "operator.statusInterval=2",
        "--wait", "--timeout=6m",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr + diagnose(api)
    return Installed(kube_cluster, images.llmquota)


def diagnose(api: KubeAPIServer) -> str:
    pods_now = api.kubectl("get", "pods", "-A", "-o", "wide").stdout
    events = api.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp").stdout[-4000:]
    return f"\npods:\n{pods_now}\nevents:\n{events}"
