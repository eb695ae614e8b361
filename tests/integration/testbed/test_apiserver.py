"""The test bed is a real API server: version, CRD + CEL validation, status, RBAC."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the fixtures provide it; no import path needed at run time
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

GROUP = "testbed.llmquota.dev"
CRD_NAME = f"widgets.{GROUP}"
CRD = textwrap.dedent(
    f"""\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: {CRD_NAME}
    spec:
      group: {GROUP}
      scope: Namespaced
      names: {{plural: widgets, singular: widget, kind: Widget}}
      versions:
        - name: v1
          served: true
          storage: true
          subresources: {{status: {{}}}}
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  required: [maxBudget]
                  properties:
                    maxBudget: {{type: number, minimum: 0}}
                    softBudget: {{type: number, minimum: 0}}
                  x-kubernetes-validations:
                    - rule: "!has(self.softBudget) || self.softBudget <= self.maxBudget"
                      message: "softBudget must not exceed maxBudget"
                      fieldPath: ".softBudget"
                status:
                  type: object
                  properties:
                    spend: {{type: number}}
    """
)


def widget(name: str, namespace: str, spec: dict[str, float]) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


@pytest.fixture(scope="module")
def widget_crd(kube_apiserver: KubeAPIServer) -> Iterator[str]:
    kube_apiserver.kubectl("apply", "-f", "-", input=CRD, check=True)
    kube_apiserver.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}", check=True
    )
    yield CRD_NAME
    kube_apiserver.kubectl("delete", f"crd/{CRD_NAME}", "--wait=false")


def test_version_is_the_built_one(kube_apiserver: KubeAPIServer) -> None:
    status, body = kube_apiserver.request("GET", "/version")
    assert status == 200
    assert isinstance(body, dict)
    assert body["gitVersion"].startswith("v1.")
    if kube_apiserver.version is not None:  # None: an external cluster, any version goes
        assert body["gitVersion"] == kube_apiserver.version
    client = json.loads(kube_apiserver.kubectl("version", "-o", "json", check=True).stdout)
    assert client["serverVersion"]["gitVersion"] == body["gitVersion"]
    # kubectl supports one minor version of skew either way.
    skew = int(client["clientVersion"]["minor"]) - int(body["minor"].rstrip("+"))
    assert abs(skew) <= 1


def test_cel_rule_refuses_a_bad_object_and_names_the_field(
    kube_apiserver: KubeAPIServer, widget_crd: str, kube_namespace: str
) -> None:
    good = kube_apiserver.kubectl(
        "apply", "-f", "-", input=widget("ok", kube_namespace, {"maxBudget": 10, "softBudget": 8})
    )
    assert good.returncode == 0, good.stderr

    bad = kube_apiserver.kubectl(
        "apply", "-f", "-", input=widget("bad", kube_namespace, {"maxBudget": 1, "softBudget": 2})
    )
    assert bad.returncode != 0
    assert "spec.softBudget" in bad.stderr
    assert "softBudget must not exceed maxBudget" in bad.stderr

    schema = kube_apiserver.kubectl(
        "apply", "-f", "-", input=widget("neg", kube_namespace, {"maxBudget": -1})
    )
    assert schema.returncode != 0
    assert "spec.maxBudget" in schema.stderr


def test_status_subresource(
    kube_apiserver: KubeAPIServer, widget_crd: str, kube_namespace: str
) -> None:
    ns = ["-n", kube_namespace]
    kube_apiserver.kubectl(
        "apply", "-f", "-", input=widget("w", kube_namespace, {"maxBudget": 10}), check=True
    )
    generation = kube_apiserver.kubectl(
        "get", "widget", "w", *ns, "-o", "jsonpath={.metadata.generation}", check=True
    ).stdout

    # Status written through the main resource is dropped ...
    kube_apiserver.kubectl(
        "patch", "widget", "w", *ns, "--type=merge", "-p", '{"status": {"spend": 1}}', check=True
    )
    got = kube_apiserver.kubectl("get", "widget", "w", *ns, "-o", "json", check=True)
    assert "status" not in json.loads(got.stdout)

    # ... and accepted through /status, without bumping the generation.
    kube_apiserver.kubectl(
        "patch", "widget", "w", *ns, "--subresource=status", "--type=merge",
        "-p", '{"status": {"spend": 2.5}}', check=True,
    )  # fmt: skip
    obj = json.loads(
        kube_apiserver.kubectl("get", "widget", "w", *ns, "-o", "json", check=True).stdout
    )
    assert obj["status"] == {"spend": 2.5}
    assert str(obj["metadata"]["generation"]) == generation


def test_rbac_role_allows_get_and_refuses_create(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    ns = ["-n", kube_namespace]
    for args in (
        ["create", "serviceaccount", "reader"],
        ["create", "role", "cm-get", "--verb=get", "--resource=configmaps"],
        ["create", "rolebinding", "reader-cm-get", "--role=cm-get",
         f"--serviceaccount={kube_namespace}:reader"],
        ["create", "configmap", "settings", "--from-literal=a=b"],
    ):  # fmt: skip
        kube_apiserver.kubectl(*args, *ns, check=True)
    token = kube_apiserver.kubectl(
        "create", "token", "reader", *ns, "--duration=10m", check=True
    ).stdout.strip()
    assert token.count(".") == 2  # a signed JWT

    allowed = kube_apiserver.kubectl("get", "configmap", "settings", *ns, token=token)
    assert allowed.returncode == 0, allowed.stderr

    refused = kube_apiserver.kubectl(
        "create", "configmap", "other", "--from-literal=a=b", *ns, token=token
    )
    assert refused.returncode != 0
    assert "is forbidden" in refused.stderr
    assert 'cannot create resource "configmaps"' in refused.stderr
    assert f"system:serviceaccount:{kube_namespace}:reader" in refused.stderr

    status, body = kube_apiserver.request(
        "POST",
        f"/api/v1/namespaces/{kube_namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raw"}},
        token=token,
    )
    assert status == 403
    assert isinstance(body, dict)
    assert body["reason"] == "Forbidden"

    status, _ = kube_apiserver.request(
        "GET", f"/api/v1/namespaces/{kube_namespace}/configmaps/settings", token=token
    )
    assert status == 200


def test_garbage_collector_deletes_dependents(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    if not kube_apiserver.controllers:
        pytest.skip("kube-controller-manager is not running (KUBEBUILDER_ASSETS without it)")
    ns = ["-n", kube_namespace]
    kube_apiserver.kubectl("create", "configmap", "owner", *ns, check=True)
    uid = kube_apiserver.kubectl(
        "get", "configmap", "owner", *ns, "-o", "jsonpath={.metadata.uid}", check=True
    ).stdout
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": kube_namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    kube_apiserver.kubectl("apply", "-f", "-", input=json.dumps(dependent), check=True)
    kube_apiserver.kubectl("delete", "configmap", "owner", *ns, check=True)
    gone = kube_apiserver.kubectl(
        "wait", "--for=delete", "configmap/dependent", *ns, "--timeout=60s"
    )
    assert gone.returncode == 0, gone.stderr
