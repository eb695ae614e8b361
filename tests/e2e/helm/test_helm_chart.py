"""The Helm chart: lint, render with several values files, validate against Kubernetes.

Each file in ``values/`` is one scenario. Files named ``invalid-*.yaml`` must make
``helm template`` fail (schema or the chart's own checks); every other file must lint,
render, and give manifests that the Kubernetes OpenAPI schemas accept. Kinds that
those schemas do not know (llmquota's and kopf's resources, cert-manager,
Prometheus Operator) are checked by the assertions below instead.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from llmquota.pricing.config_file import load_price_table

pytestmark = pytest.mark.e2e

VALUES_DIR = Path(__file__).parent / "values"
VALID_VALUES = sorted(p for p in VALUES_DIR.glob("*.yaml") if not p.name.startswith("invalid-"))
INVALID_VALUES = sorted(VALUES_DIR.glob("invalid-*.yaml"))
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "llmquota-system"
RELEASE = "lq"
# API groups the Kubernetes schemas cannot know.
CUSTOM_GROUPS = {"llmquota.dev", "kopf.dev", "cert-manager.io", "monitoring.coreos.com"}
# What each invalid values file must say when it fails.
INVALID_MESSAGES = {
    "invalid-typo.yaml": "additional properties 'replicaCont' not allowed",
    "invalid-redis-both.yaml": "not both",
    "invalid-global-budget.yaml": "/globalBudget",
    "invalid-redis-cluster-and-sentinel.yaml": "builds the URL",
}

Manifest = dict[str, Any]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (the API server keeps only one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> Any:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def helm_template(
    helm: Path, chart: Path, *values_files: Path, set_values: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    args = [str(helm), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBERNETES_VERSION, "--api-versions", "monitoring.coreos.com/v1"]
    for values_file in values_files:
        args += ["--values", str(values_file)]
    for assignment in set_values:
        args += ["--set", assignment]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


def render(
    helm: Path, chart: Path, *values_files: Path, set_values: tuple[str, ...] = ()
) -> list[Manifest]:
    result = helm_template(helm, chart, *values_files, set_values=set_values)
    assert result.returncode == 0, result.stderr
    documents = yaml.load_all(result.stdout, Loader=_UniqueKeyLoader)
    return [document for document in documents if document]


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        manifest
        for manifest in manifests
        if manifest["kind"] == kind and (name is None or manifest["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_container(manifests: list[Manifest]) -> Manifest:
    deployment = one(manifests, "Deployment")
    container: Manifest = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def env_var(container: Manifest, name: str) -> Manifest:
    return next(variable for variable in container["env"] if variable["name"] == name)


@pytest.mark.parametrize("values_file", VALID_VALUES, ids=lambda path: path.stem)
def test_lint(helm_bin: Path, chart_dir: Path, values_file: Path) -> None:
    result = subprocess.run(
        [str(helm_bin), "lint", "--strict", str(chart_dir), "--values", str(values_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values_file", VALID_VALUES, ids=lambda path: path.stem)
def test_rendered_manifests_are_valid_kubernetes(
    helm_bin: Path, chart_dir: Path, values_file: Path
) -> None:
    manifests = render(helm_bin, chart_dir, values_file)
    validated = 0
    for manifest in manifests:
        assert manifest["metadata"]["name"], manifest
        assert len(manifest["metadata"]["name"]) <= 63 or manifest["kind"] in {
            "CustomResourceDefinition"
        }
        if manifest["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {error}")
        validated += 1
    assert validated >= 8


@pytest.mark.parametrize("values_file", INVALID_VALUES, ids=lambda path: path.stem)
def test_invalid_values_fail(helm_bin: Path, chart_dir: Path, values_file: Path) -> None:
    result = helm_template(helm_bin, chart_dir, values_file)
    assert result.returncode != 0, f"{values_file.name} rendered; it must be refused"
    assert INVALID_MESSAGES[values_file.name] in result.stderr


def test_operator_deployment_defaults(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "defaults.yaml")
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(manifests)

    assert container["command"] == ["llmquota", "operator"]
    assert container["image"].endswith(":0.1.0")
    args = container["args"]
    assert "--health-listen=0.0.0.0:8080" in args
    assert "--webhook-listen=0.0.0.0:9443" in args
    assert "--webhook-cert-dir=/etc/llmquota/webhook-tls" in args
    assert "--peering=llmquota" in args
    assert f"--sidecar-config-map={RELEASE}-llmquota-sidecar" in args
    assert not any(
        arg.startswith(("--namespace", "--global-budget", "--fail-open")) for arg in args
    )
    # The Redis URL comes from a Secret, for the operator and (mirrored) its sidecars.
    redis_url = f"redis://{RELEASE}-llmquota-redis.{NAMESPACE}.svc:6379/0"
    secret_name = f"{RELEASE}-llmquota-redis-url"
    assert env_var(container, "LLMQUOTA_REDIS")["valueFrom"]["secretKeyRef"] == {
        "name": secret_name,
        "key": "url",
    }
    assert one(manifests, "Secret", secret_name)["stringData"] == {"url": redis_url}
    assert f"--sidecar-redis-secret={secret_name}:url" in args
    assert not any("redis://" in arg for arg in args)

    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080, "webhook": 9443}

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]

    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service = one(manifests, "Service", f"{RELEASE}-llmquota")
    assert service["spec"]["selector"] == selector


def test_health_port_is_a_value(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, set_values=("operator.healthPort=9090",))
    container = operator_container(manifests)
    assert "--health-listen=0.0.0.0:9090" in container["args"]
    service = one(manifests, "Service", f"{RELEASE}-llmquota")
    assert {"name": "http-metrics", "port": 9090, "targetPort": "http", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )


def test_rbac_is_least_privilege(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir)
    # The roles the chart ships for people (approving overrides, reading) are not the
    # operator's; they are checked in test_roles_for_people_grant_what_they_say.
    operator_roles = [
        role
        for role in find(manifests, "ClusterRole")
        if role["metadata"]["name"] not in {f"{RELEASE}-llmquota-{r}" for r in PEOPLE_ROLES}
    ]
    rules = [rule for role in operator_roles for rule in role["rules"]]
    rules += [rule for role in find(manifests, "Role") for rule in role["rules"]]

    def verbs(group: str, resource: str) -> set[str]:
        return {
            verb
            for rule in rules
            if group in rule["apiGroups"] and resource in rule["resources"]
            for verb in rule["verbs"]
        }

    for resource in ("teams", "apikeys", "budgets", "ratelimits", "budgetoverrides"):
        assert verbs("llmquota.dev", resource) == {"get", "list", "watch", "patch"}
        assert verbs("llmquota.dev", f"{resource}/status") == {"get", "patch", "update"}
    assert verbs("", "secrets") == {"get", "list", "watch", "create", "patch"}
    assert verbs("", "events") == {"create", "patch"}
    assert verbs("events.k8s.io", "events") == {"create", "patch"}
    assert verbs("kopf.dev", "clusterkopfpeerings") == {"get", "list", "watch", "patch"}
    assert verbs("apiextensions.k8s.io", "customresourcedefinitions") == {"get", "list", "watch"}
    assert verbs("", "namespaces") == {"list", "watch"}
    assert verbs("batch", "jobs") == {"get"}  # the webhook: a Job's CronJob
    assert verbs("admissionregistration.k8s.io", "mutatingwebhookconfigurations") == set()
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert "delete" not in rule["verbs"], rule


PEOPLE_ROLES = ("budget-approver", "viewer")
READ = ["get", "list", "watch"]


def test_roles_for_people_grant_what_they_say(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir)
    approver = one(manifests, "ClusterRole", f"{RELEASE}-llmquota-budget-approver")
    assert approver["rules"] == [
        {
            "apiGroups": ["llmquota.dev"],
            "resources": ["budgetoverrides"],
            "verbs": [*READ, "create", "update", "patch", "delete"],
        },
        {
            "apiGroups": ["llmquota.dev"],
            "resources": ["apikeys", "teams", "budgets"],
            "verbs": READ,
        },
    ]
    viewer = one(manifests, "ClusterRole", f"{RELEASE}-llmquota-viewer")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert all(rule["verbs"] == READ for rule in viewer["rules"])
    assert "secrets" not in str(viewer["rules"])


def test_self_signed_webhook_certificate(helm_bin: Path, chart_dir: Path, tmp_path: Path) -> None:
    manifests = render(helm_bin, chart_dir)
    secret = one(manifests, "Secret", f"{RELEASE}-llmquota-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    webhook_config = one(manifests, "MutatingWebhookConfiguration")
    webhook = webhook_config["webhooks"][0]
    assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert webhook["clientConfig"]["service"] == {
        "name": f"{RELEASE}-llmquota",
        "namespace": NAMESPACE,
        "path": "/inject-sidecar",
        "port": 443,
    }
    assert not find(manifests, "Certificate")

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: the certificate chain is not checked")
    for key in ("ca.crt", "tls.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    verified = subprocess.run(
        [openssl, "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    names = subprocess.run(
        [openssl, "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"DNS:{RELEASE}-llmquota.{NAMESPACE}.svc" in names


def test_webhook_selects_annotated_pods_outside_own_namespace(
    helm_bin: Path, chart_dir: Path
) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "defaults.yaml")
    webhook = one(manifests, "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["sideEffects"] == "NoneOnDryRun"
    assert webhook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    excluded = webhook["namespaceSelector"]["matchExpressions"][-1]
    assert excluded["operator"] == "NotIn"
    assert {NAMESPACE, "kube-system"} <= set(excluded["values"])
    (condition,) = webhook["matchConditions"]
    assert (
        "object.metadata.annotations['llmquota.dev/inject'] == 'true'" in (condition["expression"])
    )


def test_cert_manager(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "cert-manager.yaml")
    secret_name = f"{RELEASE}-llmquota-webhook-tls"
    assert not find(manifests, "Secret", secret_name)
    issuer = one(manifests, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    certificate = one(manifests, "Certificate", secret_name)
    assert certificate["spec"]["secretName"] == secret_name
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    assert f"{RELEASE}-llmquota.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]

    webhook_config = one(manifests, "MutatingWebhookConfiguration")
    annotations = webhook_config["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{secret_name}"
    webhook = webhook_config["webhooks"][0]
    assert "caBundle" not in webhook["clientConfig"]
    assert webhook["failurePolicy"] == "Fail"
    selector = webhook["namespaceSelector"]
    assert selector["matchLabels"] == {"llmquota.dev/injection": "enabled"}
    assert selector["matchExpressions"][0]["operator"] == "NotIn"

    assert one(manifests, "Deployment")["spec"]["replicas"] == 2
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(manifests, "Service", f"{RELEASE}-llmquota")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"


def test_cert_manager_with_an_existing_issuer(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(
        helm_bin,
        chart_dir,
        set_values=(
            "webhook.certManager.enabled=true",
            "webhook.certManager.issuerRef.kind=ClusterIssuer",
            "webhook.certManager.issuerRef.name=internal-ca",
        ),
    )
    assert not find(manifests, "Issuer")
    issuer_ref = one(manifests, "Certificate")["spec"]["issuerRef"]
    assert issuer_ref == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "internal-ca",
    }


def test_external_redis(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "external-redis.yaml")
    assert not find(manifests, "StatefulSet")
    assert not find(manifests, "Service", f"{RELEASE}-llmquota-redis")
    redis = env_var(operator_container(manifests), "LLMQUOTA_REDIS")
    assert redis["valueFrom"]["secretKeyRef"] == {"name": "llmquota-redis", "key": "url"}
    assert "--sidecar-redis-secret=llmquota-redis:url" in operator_container(manifests)["args"]
    assert not find(manifests, "Secret", f"{RELEASE}-llmquota-redis-url")


def test_external_sentinel_with_a_password_secret(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "external-sentinel.yaml")
    assert not find(manifests, "StatefulSet")
    container = operator_container(manifests)
    # The URL, like every Redis URL, reaches the operator (and its sidecars) from a Secret.
    url_secret = env_var(container, "LLMQUOTA_REDIS")["valueFrom"]["secretKeyRef"]
    assert url_secret == {"name": f"{RELEASE}-llmquota-redis-url", "key": "url"}
    assert one(manifests, "Secret", url_secret["name"])["stringData"]["url"] == (
        "redis+sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379,sentinel-2.redis/llmquota/1"
    )
    password_file = env_var(container, "LLMQUOTA_REDIS_PASSWORD_FILE")["value"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "redis-password"]
    assert password_file == f"{mount['mountPath']}/password"
    volumes = one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]
    [volume] = [v for v in volumes if v["name"] == "redis-password"]
    assert volume["secret"] == {
        "secretName": "llmquota-redis-password",
        "items": [{"key": "redis-password", "path": "password"}],
    }
    # Injected sidecars get the same Secret, mounted as a file (the webhook's part).
    assert (
        "--sidecar-redis-password-secret=llmquota-redis-password:redis-password"
        in (container["args"])
    )
    assert not any("password" in arg for arg in container["args"] if "-secret=" not in arg)


def test_external_cluster(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "external-cluster.yaml")
    assert not find(manifests, "StatefulSet")
    url_secret = env_var(operator_container(manifests), "LLMQUOTA_REDIS")["valueFrom"]
    assert one(manifests, "Secret", url_secret["secretKeyRef"]["name"])["stringData"]["url"] == (
        "rediss+cluster://redis-cluster-0.redis-cluster:6379,"
        "redis-cluster-1.redis-cluster:6379,redis-cluster-2.redis-cluster"
    )


def test_internal_redis(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir)
    statefulset = one(manifests, "StatefulSet", f"{RELEASE}-llmquota-redis")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "redis:7.4-alpine"
    assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    service = one(manifests, "Service", f"{RELEASE}-llmquota-redis")
    assert service["spec"]["selector"].items() <= (
        statefulset["spec"]["template"]["metadata"]["labels"].items()
    )


def test_global_budget_pricing_and_namespaces(
    helm_bin: Path, chart_dir: Path, tmp_path: Path
) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "global-budget-pricing.yaml")
    args = operator_container(manifests)["args"]
    assert "--global-budget=llmquota-system/global" in args
    assert "--fail-open" in args
    assert "--upstream=http://vllm.inference.svc:8000" in args
    assert "--upstream-secret=upstream-api-key:api-key" in args
    assert "--sidecar-image=registry.example.com/platform/llmquota-sidecar:0.1.0" in args
    assert "--status-interval=30" in args
    assert [arg for arg in args if arg.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]

    config = one(manifests, "ConfigMap", f"{RELEASE}-llmquota-sidecar")["data"]
    assert config["fail-open"] == "true"
    assert yaml.safe_load(config["pricing.yaml"]) == {
        "models": {
            "llama3": {"inputPerMillion": 0.2, "outputPerMillion": 0.2, "contextWindow": 131072},
            "gpt-4o-mini": {
                "inputPerMillion": 0.15,
                "outputPerMillion": 0.6,
                "cachedInputPerMillion": 0.075,
            },
        },
        "unknownModel": {"inputPerMillion": 10, "outputPerMillion": 30},
    }
    # What the chart writes, the sidecar's pricing file reader takes.
    pricing_file = tmp_path / "pricing.yaml"
    pricing_file.write_text(config["pricing.yaml"])
    assert load_price_table(pricing_file).context_window("llama3") == 131072

    bindings = find(manifests, "RoleBinding", f"{RELEASE}-llmquota-resources")
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == ["team-a", "team-b"]
    assert not find(manifests, "ClusterRoleBinding", f"{RELEASE}-llmquota-resources")
    peerings = find(manifests, "KopfPeering", "llmquota")
    assert sorted(peering["metadata"]["namespace"] for peering in peerings) == ["team-a", "team-b"]
    assert not find(manifests, "ClusterKopfPeering")
    own_role = one(manifests, "Role", f"{RELEASE}-llmquota")
    assert any(
        rule.get("resourceNames") == [f"{RELEASE}-llmquota-redis-url", "upstream-api-key"]
        for rule in own_role["rules"]
    )

    statefulset = one(manifests, "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert statefulset["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]


def test_prices_given_with_set_are_accepted(helm_bin: Path, chart_dir: Path) -> None:
    """`helm --set` passes 0.2 as a string: the schema must take what users type."""
    manifests = render(
        helm_bin,
        chart_dir,
        set_values=(
            "pricing.models.llama3.inputPerMillion=0.2",
            "pricing.models.llama3.outputPerMillion=1",
            "pricing.unknownModel.inputPerMillion=2.5e1",
            "pricing.unknownModel.outputPerMillion=30",
        ),
    )
    config = one(manifests, "ConfigMap", f"{RELEASE}-llmquota-sidecar")["data"]
    pricing = yaml.safe_load(config["pricing.yaml"])
    assert float(pricing["models"]["llama3"]["inputPerMillion"]) == 0.2
    assert float(pricing["models"]["llama3"]["outputPerMillion"]) == 1
    assert float(pricing["unknownModel"]["inputPerMillion"]) == 25


@pytest.mark.parametrize("price", ["cheap", "-0.2", "0.2 USD"])
def test_prices_that_are_not_numbers_are_refused(
    helm_bin: Path, chart_dir: Path, price: str
) -> None:
    result = helm_template(
        helm_bin,
        chart_dir,
        set_values=(
            f"pricing.models.llama3.inputPerMillion={price}",
            "pricing.models.llama3.outputPerMillion=1",
        ),
    )
    assert result.returncode != 0
    assert "inputPerMillion" in result.stderr


def test_peering_is_cluster_wide_by_default(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir)
    peering = one(manifests, "ClusterKopfPeering", "llmquota")
    # Its CRD is in the same release: it can only be created after the CRDs exist.
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert {crd["metadata"]["name"] for crd in find(manifests, "CustomResourceDefinition")} >= {
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


@pytest.fixture
def chart_with_crds(chart_dir: Path, tmp_path: Path) -> Path:
    """A copy of the chart with crd-files/ holding the project's generated CRDs."""
    chart = tmp_path / "llmquota"
    shutil.copytree(chart_dir, chart)
    generated = sorted((chart_dir.parents[1] / "crds").glob("*.yaml"))
    if not list((chart / "crd-files").glob("*.yaml")):
        if not generated:
            pytest.fail("no CRDs in crds/ to test with: run `make crds`", pytrace=False)
        for crd_file in generated:
            shutil.copy(crd_file, chart / "crd-files" / crd_file.name)
    return chart


def test_crds_rendered_from_crd_files_and_kept(helm_bin: Path, chart_with_crds: Path) -> None:
    manifests = render(helm_bin, chart_with_crds)
    crds = {crd["metadata"]["name"]: crd for crd in find(manifests, "CustomResourceDefinition")}
    for crd_file in sorted((chart_with_crds / "crd-files").glob("*.yaml")):
        source = yaml.safe_load(crd_file.read_text())
        rendered = crds[source["metadata"]["name"]]
        assert rendered["spec"] == source["spec"], "the template must not change a CRD's spec"
        assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert rendered["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        kubernetes_validate.validate(rendered, KUBERNETES_VERSION, strict=True)
    assert {"teams.llmquota.dev", "apikeys.llmquota.dev"} <= crds.keys()


def test_crds_keep_and_enabled_switches(helm_bin: Path, chart_with_crds: Path) -> None:
    not_kept = render(helm_bin, chart_with_crds, set_values=("crds.keep=false",))
    crds = find(not_kept, "CustomResourceDefinition")
    assert crds
    assert all("annotations" not in crd["metadata"] for crd in crds)

    disabled = render(helm_bin, chart_with_crds, set_values=("crds.enabled=false",))
    assert not find(disabled, "CustomResourceDefinition")


def test_chart_has_no_helm_crds_folder(chart_dir: Path) -> None:
    # Helm installs crds/ once and never upgrades it; the CRDs live in crd-files/.
    assert not list((chart_dir / "crds").glob("*.yaml"))


def test_names_are_cut_to_63_characters(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, set_values=(f"fullnameOverride={'x' * 80}",))
    for manifest in manifests:
        if manifest["kind"] != "CustomResourceDefinition":
            name = manifest["metadata"]["name"]
            assert len(name) <= 63, name
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name


def test_dashboard_config_map(helm_bin: Path, chart_dir: Path) -> None:
    manifests = render(helm_bin, chart_dir, VALUES_DIR / "cert-manager.yaml")
    config_map = one(manifests, "ConfigMap", f"{RELEASE}-llmquota-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["llmquota.json"])
    assert dashboard["uid"] == "llmquota"
    assert not find(render(helm_bin, chart_dir), "ConfigMap", f"{RELEASE}-llmquota-dashboard")


@pytest.mark.parametrize(
    "set_values",
    [
        ("webhook.enabled=false",),
        ("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=existing"),
        ("peering.createCRDs=false", "crds.enabled=false"),
        ("image.digest=sha256:" + "a" * 64, "redis.internal.persistence.storageClass=fast"),
    ],
    ids=["no-webhook", "no-rbac", "no-crds", "digest-storage-class"],
)
def test_switches_render_valid_manifests(
    helm_bin: Path, chart_dir: Path, set_values: tuple[str, ...]
) -> None:
    manifests = render(helm_bin, chart_dir, set_values=set_values)
    for manifest in manifests:
        if manifest["apiVersion"].split("/")[0] not in CUSTOM_GROUPS:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    container = operator_container(manifests)
    if "webhook.enabled=false" in set_values:
        assert not find(manifests, "MutatingWebhookConfiguration")
        assert not find(manifests, "Secret", f"{RELEASE}-llmquota-webhook-tls")
        assert not any(arg.startswith("--webhook") for arg in container["args"])
    if "rbac.create=false" in set_values:
        assert not find(manifests, "ClusterRole")
        assert not find(manifests, "ServiceAccount")
        pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "existing"
    if "crds.enabled=false" in set_values:
        assert not find(manifests, "CustomResourceDefinition")
    if any(value.startswith("image.digest") for value in set_values):
        assert container["image"] == "ghcr.io/llmquota/llmquota@sha256:" + "a" * 64
