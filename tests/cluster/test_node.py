"""The node itself: a Pod is scheduled, its sandbox runs, it gets an address in the
cluster's own network, and it goes away again."""

from __future__ import annotations

import json

import pytest
from tests.support.kube_node import NODE_NAME, KubeCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_pause_pod_runs_on_the_node(kube_cluster: KubeCluster) -> None:
    api = kube_cluster.api
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pause", "namespace": "default"},
        "spec": {
            "containers": [
                {"name": "pause", "image": kube_cluster.images.pause,
                 "imagePullPolicy": "Never"}
            ],
            "terminationGracePeriodSeconds": 0,
        },
    }  # fmt: skip
    api.kubectl("apply", "-f", "-", input=json.dumps(pod), check=True)
    try:
        waited = api.kubectl(
            "wait", "pod/pause", "--for=condition=Ready", "--timeout=120s", timeout=150
        )
        assert waited.returncode == 0, waited.stderr
        stored = json.loads(api.kubectl("get", "pod", "pause", "-o", "json", check=True).stdout)
        assert stored["spec"]["nodeName"] == NODE_NAME
        assert stored["status"]["podIP"].startswith("10.88.")
    finally:
        api.kubectl("delete", "pod", "pause", "--wait=true", "--timeout=60s", timeout=90)
    assert api.kubectl("get", "pod", "pause").returncode != 0
