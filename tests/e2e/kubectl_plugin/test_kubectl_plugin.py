"""`kubectl llmquota` against the real API server: objects applied with kubectl, statuses
patched through the status subresource as the operator writes them, the plugin run as a
subprocess (its console script, and through kubectl's plugin lookup on PATH)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from tests.e2e.kubectl_plugin.plugin_bed import (
    PLUGIN,
    PluginRunner,
    apply,
    condition,
    seed,
    status_of,
)
from tests.support.kube_apiserver import REPO_ROOT, cache_dir

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TOP_HEADERS = ["NAME", "TEAM", "SPEND", "BUDGET", "REMAINING", "RESETS IN", "BURN/H",
               "EXHAUSTS IN", "STATUS"]  # fmt: skip


def table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Split a kubectl-style table into its headers and rows (columns 3+ spaces apart)."""
    header, *lines = text.splitlines()
    starts = [match.start() for match in re.finditer(r"(?:^|(?<=   ))\S", header)]
    spans = list(zip(starts, [*starts[1:], None], strict=True))
    headers = [header[start:end].strip() for start, end in spans]
    rows = [
        {name: line[start:end].strip() for name, (start, end) in zip(headers, spans, strict=True)}
        for line in lines
    ]
    return headers, rows


def test_top_lists_teams_and_keys_by_spend(seeded: PluginRunner) -> None:
    headers, rows = table(seeded.ok("top"))
    assert headers == TOP_HEADERS
    assert [row["NAME"] for row in rows] == [
        "team/qa", "apikey/qa-bot", "apikey/chatty", "apikey/lab", "team/research",
    ]  # fmt: skip
    qa = rows[0]
    assert (qa["SPEND"], qa["BUDGET"], qa["REMAINING"]) == ("100.00", "100.00", "0")
    assert qa["RESETS IN"] in {"14h", "13h"}
    # The operator writes no forecast yet: shown as "-", never an error.
    assert (qa["BURN/H"], qa["EXHAUSTS IN"]) == ("-", "-")
    assert qa["STATUS"] == "BudgetExceeded"
    assert rows[1]["TEAM"] == "qa"
    assert rows[1]["STATUS"] == "Ready"
    assert rows[3]["BUDGET"] == "-"


def test_top_sorts_and_filters_by_kind(seeded: PluginRunner) -> None:
    _, rows = table(seeded.ok("top", "--sort", "remaining"))
    assert [row["NAME"] for row in rows] == [
        "team/qa", "apikey/chatty", "team/research", "apikey/qa-bot", "apikey/lab",
    ]  # fmt: skip
    _, rows = table(seeded.ok("top", "--sort", "reset"))
    assert [row["NAME"] for row in rows][:2] == ["apikey/chatty", "apikey/lab"]
    _, rows = table(seeded.ok("top", "teams"))
    assert [row["NAME"] for row in rows] == ["team/qa", "team/research"]


def test_top_shows_the_forecast(seeded: PluginRunner) -> None:
    exhausts_at = (datetime.now(UTC) + timedelta(hours=1, minutes=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    forecast = {"burnRateUsdPerHour": 0.25, "exhaustsAt": exhausts_at}
    seeded.patch_status("apikeys", "lab", status_of(2, None, timedelta(hours=3), forecast=forecast))
    _, rows = table(seeded.ok("top", "--sort", "forecast"))
    lab = rows[0]
    assert lab["NAME"] == "apikey/lab"
    assert lab["BURN/H"] == "0.25"
    assert lab["EXHAUSTS IN"] in {"89m", "90m"}
    assert all(row["EXHAUSTS IN"] == "-" for row in rows[1:])
    item = next(item for item in seeded.json("top")["items"] if item["name"] == "lab")
    assert item["forecast"] == forecast


def test_top_all_namespaces(seeded: PluginRunner, kube_apiserver: KubeAPIServer) -> None:
    other = f"{seeded.namespace[:50]}-b"
    kube_apiserver.kubectl("create", "namespace", other, check=True)
    try:
        apply(kube_apiserver, other, MANIFEST_ELSEWHERE)
        headers, rows = table(seeded.ok("top", "-A", namespace=False))
        assert headers == ["NAMESPACE", *TOP_HEADERS]
        ours = [row for row in rows if row["NAMESPACE"] in {seeded.namespace, other}]
        assert [(row["NAMESPACE"], row["NAME"]) for row in ours][:2] == [
            (seeded.namespace, "team/qa"), (seeded.namespace, "apikey/qa-bot"),
        ]  # fmt: skip
        assert (other, "apikey/elsewhere") in [(row["NAMESPACE"], row["NAME"]) for row in ours]
        # Without -A only the one namespace.
        _, rows = table(seeded.ok("top"))
        assert "apikey/elsewhere" not in [row["NAME"] for row in rows]
    finally:
        kube_apiserver.kubectl("delete", "namespace", other, "--wait=false")


MANIFEST_ELSEWHERE = """\
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: elsewhere}
spec: {budget: {maxBudget: 1}}
"""


def test_top_json_and_yaml(seeded: PluginRunner) -> None:
    document = seeded.json("top")
    first = document["items"][0]
    assert first["kind"] == "Team"
    assert first["name"] == "qa"
    assert first["namespace"] == seeded.namespace
    assert (first["spend"], first["maxBudget"], first["remaining"]) == (100, 100, 0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["budgetResetAt"])
    assert first["forecast"] == {"burnRateUsdPerHour": None, "exhaustsAt": None}
    assert first["status"] == "BudgetExceeded"
    as_yaml = yaml.safe_load(seeded.ok("top", "-o", "yaml"))
    assert as_yaml == document


def test_namespace_and_context_come_from_the_kubeconfig(
    seeded: PluginRunner, kubeconfig_with: Callable[..., Path]
) -> None:
    in_context = kubeconfig_with(namespace=seeded.namespace)
    result = seeded("top", env=seeded.env(KUBECONFIG=str(in_context)), namespace=False)
    assert result.returncode == 0, result.stderr
    assert "team/qa" in result.stdout

    other_context = kubeconfig_with(namespace=seeded.namespace, context_name="qa-context")
    env = {k: v for k, v in seeded.env().items() if k != "KUBECONFIG"}
    args = ("top", "--kubeconfig", str(other_context))
    current = seeded(*args, env=env, namespace=False)  # current context: namespace default
    assert current.returncode == 0, current.stderr
    assert "team/qa" not in current.stdout
    chosen = seeded(*args, "--context", "qa-context", env=env, namespace=False)
    assert chosen.returncode == 0, chosen.stderr
    assert "team/qa" in chosen.stdout


def test_runs_as_a_kubectl_plugin(seeded: PluginRunner, kube_apiserver: KubeAPIServer) -> None:
    path = f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    listed = subprocess.run(
        [str(kube_apiserver.kubectl_path), "plugin", "list"],
        capture_output=True, text=True, check=False, timeout=60, env=seeded.env(PATH=path),
    )  # fmt: skip
    assert str(PLUGIN) in listed.stdout
    ran = subprocess.run(
        [str(kube_apiserver.kubectl_path), "llmquota", "top", "-n", seeded.namespace],
        capture_output=True, text=True, check=False, timeout=60, env=seeded.env(PATH=path),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert table(ran.stdout)[0] == TOP_HEADERS


def test_why_names_the_refusing_team_and_what_lifts_it(seeded: PluginRunner) -> None:
    text = seeded.ok("why", "apikey/qa-bot", "--global-budget", f"{seeded.namespace}/missing")
    assert f"apikey/qa-bot in namespace {seeded.namespace} is REFUSED" in text
    assert "budget exhausted at team/qa: spend 100.00 of 100.00 USD, until" in text
    _, rows = table(text.split("\n\n")[1])
    refuses = {row["SCOPE"]: row["REFUSES"] for row in rows}
    assert refuses == {"team/qa": "yes", "member ishaan of team/qa": "no", "apikey/qa-bot": "no"}
    assert "the global budget" in text
    assert "missing was not found" in text
    assert "Models:     gpt-4o-mini (key: gpt-4o-mini; team: gpt-4o-mini, llama3)" in text
    assert "wait until" in text
    assert "raise spec.budget.maxBudget of team/qa" in text
    assert f"kubectl edit team qa -n {seeded.namespace}" in text
    manifest = text.split("kubectl apply -f - <<EOF\n")[1].split("EOF")[0]
    override = yaml.safe_load(manifest)
    assert override["kind"] == "BudgetOverride"
    assert override["spec"]["target"] == {"kind": "Team", "name": "qa"}
    assert override["metadata"]["namespace"] == seeded.namespace
    # The suggested override is a valid BudgetOverride, as the API server sees it.
    applied = seeded.kube.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    assert applied.returncode == 0, applied.stderr


def test_why_json_and_a_key_that_is_not_refused(seeded: PluginRunner) -> None:
    report = seeded.json("why", "apikey", "chatty", "--global-budget", "x/y")
    assert report["refused"] is True  # the global budget x/y does not exist
    seeded.patch_status("apikeys", "chatty", status_of(1, 5, timedelta(hours=2)))
    report = seeded.json("why", "apikey/lab")
    assert report["refused"] is False
    assert report["apiKey"] == {"namespace": seeded.namespace, "name": "lab"}
    scopes = {scope["scope"]: scope for scope in report["scopes"]}
    assert scopes["team/research"]["maxBudget"] == 10
    assert scopes["team/research"]["budgetDuration"] == "1d"
    text = seeded.ok("why", "apikey/lab")
    assert "is not refused by any budget, expiry or block" in text
    assert "What would lift it" not in text


def test_why_reads_the_global_budget_from_the_operator_deployment(
    seeded: PluginRunner, kube_apiserver: KubeAPIServer
) -> None:
    namespace = seeded.namespace
    apply(kube_apiserver, namespace, GLOBAL_BUDGET)
    apply(kube_apiserver, namespace, OPERATOR_DEPLOYMENT.replace("NAMESPACE", namespace))
    try:
        exceeded = {
            "reason": "GlobalBudgetExhausted",
            "message": f"the global budget {namespace}/everyone refuses: spend 1000 of 1000 USD",
        }
        seeded.patch_status(
            "apikeys", "chatty", status_of(1, 5, timedelta(hours=2), exceeded=exceeded)
        )
        report = seeded.json("why", "apikey/chatty")
        scopes = {scope["scope"]: scope for scope in report["scopes"]}
        global_scope = scopes[f"global budget {namespace}/everyone"]
        assert global_scope["maxBudget"] == 1000
        assert global_scope["refuses"] is True
        assert scopes["apikey/chatty"]["refuses"] is False
        text = seeded.ok("why", "apikey/chatty")
        assert f"raise spec.maxBudget of Budget {namespace}/everyone" in text
        assert "BudgetOverride" not in text  # overrides raise a Team or an ApiKey only
    finally:
        kube_apiserver.kubectl("delete", "deployment", "llmquota", "-n", namespace)


GLOBAL_BUDGET = """\
apiVersion: llmquota.dev/v1alpha1
kind: Budget
metadata: {name: everyone}
spec: {maxBudget: 1000, budgetDuration: 30d}
"""
OPERATOR_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: llmquota
  labels: {app.kubernetes.io/part-of: llmquota, app.kubernetes.io/component: operator}
spec:
  selector: {matchLabels: {app: llmquota-operator}}
  template:
    metadata: {labels: {app: llmquota-operator}}
    spec:
      containers:
        - name: operator
          image: ghcr.io/llmquota/llmquota:0.1.0
          command: [llmquota, operator]
          args: [--peering=llmquota, --global-budget=NAMESPACE/everyone]
"""


def test_why_expired_and_blocked(plugin: PluginRunner) -> None:
    apply(plugin.kube, plugin.namespace, EXPIRED_KEY)
    plugin.patch_status(
        "apikeys", "old",
        {"conditions": [condition("Expired", "True", "KeyExpired"),
                        condition("Blocked", "True", "KeyBlocked")]},
    )  # fmt: skip
    text = plugin.ok("why", "apikey/old", "--global-budget", f"{plugin.namespace}/none")
    assert "the key expired at 2026-01-01T00:00:00Z" in text
    assert "the key is blocked" in text
    assert "kubectl patch apikey old" in text
    assert '{"spec":{"blocked":false}}' in text


EXPIRED_KEY = """\
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: old}
spec: {expires: "2026-01-01T00:00:00Z", blocked: true}
"""


def test_usage_by_model_member_and_workload(seeded: PluginRunner) -> None:
    headers, rows = table(seeded.ok("usage", "team/qa"))
    assert headers == ["NAME", "BY", "WHAT", "SPEND", "SHARE"]
    assert [(row["BY"], row["WHAT"], row["SPEND"], row["SHARE"]) for row in rows] == [
        ("model", "gpt-4o-mini", "70.00", "70%"),
        ("model", "llama3", "30.00", "30%"),
        ("member", "ishaan", "20.00", "20%"),
    ]
    _, rows = table(seeded.ok("usage", "--by", "model"))
    assert {row["NAME"] for row in rows} == {"team/qa", "team/research", "apikey/qa-bot"}
    assert {row["BY"] for row in rows} == {"model"}
    document = seeded.json("usage", "apikeys")
    by_name = {item["name"]: item for item in document["items"]}
    assert by_name["qa-bot"]["modelSpend"] == {"gpt-4o-mini": 20}
    assert by_name["qa-bot"]["workloadSpend"] == {}


def test_errors_are_one_line_and_exit_1(
    plugin: PluginRunner,
    kube_apiserver: KubeAPIServer,
    kubeconfig_with: Callable[..., Path],
    tmp_path: Path,
) -> None:
    missing = plugin("why", "apikey/nope")
    assert missing.returncode == 1
    assert missing.stderr == (
        f'error: apikeys.llmquota.dev "nope" not found in namespace "{plugin.namespace}"\n'
    )

    kube_apiserver.kubectl("create", "serviceaccount", "nobody", "-n", plugin.namespace, check=True)
    token = kube_apiserver.kubectl(
        "create", "token", "nobody", "-n", plugin.namespace, check=True
    ).stdout.strip()
    forbidden = plugin("top", env=plugin.env(KUBECONFIG=str(kubeconfig_with(token=token))))
    assert forbidden.returncode == 1
    assert forbidden.stderr.startswith("error: Forbidden (403): ")
    assert forbidden.stderr.count("\n") == 1

    unreachable = json.loads(kube_apiserver.kubeconfig.read_text())
    unreachable["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    closed = tmp_path / "closed-port"
    closed.write_text(json.dumps(unreachable))
    down = plugin("top", env=plugin.env(KUBECONFIG=str(closed)))
    assert down.returncode == 1
    assert down.stderr.startswith("error: cannot reach the API server at https://127.0.0.1:1")
    assert down.stderr.count("\n") == 1

    nothing = plugin("top", env=plugin.env(KUBECONFIG=str(tmp_path / "absent"), HOME=str(tmp_path)))
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("error: no kubeconfig")


def test_an_empty_namespace(plugin: PluginRunner) -> None:
    result = plugin("top")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == f"No resources found in {plugin.namespace} namespace.\n"
    assert plugin.json("top") == {"items": []}


def test_seed_helper_writes_what_the_crd_keeps(plugin: PluginRunner) -> None:
    seed(plugin)
    shown = plugin.kube.kubectl(
        "get", "team", "qa", "-n", plugin.namespace, "-o", "json", check=True
    ).stdout
    assert json.loads(shown)["status"]["memberSpend"] == {"ishaan": 20}


def test_a_reader_bound_to_the_chart_viewer_role(
    seeded: PluginRunner, kube_apiserver: KubeAPIServer, kubeconfig_with: Callable[..., Path]
) -> None:
    """Someone who may only read one namespace (the chart's viewer ClusterRole, bound there):
    top and why work; the operator's Deployment cannot be listed, which why says and goes
    on; -A is refused by the API server, in one line."""
    namespace = seeded.namespace
    release = f"pv-{namespace[-6:]}"
    rendered = subprocess.run(
        [str(cache_dir() / "bin" / "helm"), "template", release, str(REPO_ROOT / "charts/llmquota"),
         "-s", "templates/approver-rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    viewer = f"{release}-llmquota-viewer"
    kube_apiserver.kubectl("apply", "-f", "-", input=rendered, check=True)
    try:
        kube_apiserver.kubectl("create", "serviceaccount", "reader", "-n", namespace, check=True)
        kube_apiserver.kubectl(
            "create", "rolebinding", "reader", "-n", namespace, f"--clusterrole={viewer}",
            f"--serviceaccount={namespace}:reader", check=True,
        )  # fmt: skip
        token = kube_apiserver.kubectl(
            "create", "token", "reader", "-n", namespace, check=True
        ).stdout.strip()
        env = seeded.env(KUBECONFIG=str(kubeconfig_with(namespace=namespace, token=token)))

        top = seeded("top", env=env, namespace=False)
        assert top.returncode == 0, top.stderr
        assert table(top.stdout)[1][0]["NAME"] == "team/qa"

        why = seeded("why", "apikey/qa-bot", env=env, namespace=False)
        assert why.returncode == 0, why.stderr
        assert "is REFUSED" in why.stdout
        assert why.stderr.startswith("warning: Deployments may not be listed")

        everywhere = seeded("top", "-A", env=env, namespace=False)
        assert everywhere.returncode == 1
        assert everywhere.stderr.startswith("error: Forbidden (403): ")
        assert everywhere.stderr.count("\n") == 1
    finally:
        kube_apiserver.kubectl("delete", "-f", "-", input=rendered)
