"""The install path on a real node, driven with helm and kubectl as a user drives it.

`helm install` of the chart (its own Redis, the project's image), the fake upstream as
a Deployment and Service, and apps annotated `llmquota.dev/inject: "true"`: the webhook
(called by the API server over TLS) injects the sidecar, the app's openai client goes
through it, budgets refuse, the sidecar's metrics are scraped at the Pod's IP, a Job
completes, and restarts and deletions leave nothing in flight behind.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from tests.cluster.conftest import Installed, diagnose
from tests.cluster.workloads import (
    APPS,
    CLIENT_SCRIPT,
    RELEASE,
    SIDECAR,
    SYSTEM_NAMESPACE,
    app_deployment,
    apply,
    client_job,
    get_json,
    pods,
    run_client,
    team_and_key,
    wait_for,
)
from tests.support.kube_apiserver import KubeAPIServer
from tests.support.kube_node import POD_CIDR

from llmquota.policy import keyspace

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

# One nano-dollar a day: the first request is served, the next refused (402).
TINY_BUDGET = {"budget": {"maxBudget": 0.000000001, "budgetDuration": "1d"}}
AMPLE_BUDGET = {"budget": {"maxBudget": 100, "budgetDuration": "1d"}}


def _redis(api: KubeAPIServer, *command: str) -> str:
    result = api.kubectl(
        "exec", "-n", SYSTEM_NAMESPACE, f"{RELEASE}-llmquota-redis-0", "--",
        "redis-cli", *command,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# Leases live beside the counters they hold, one sorted set per hash tag.
_COUNT_LEASES = (
    "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
    "n = n + redis.call('ZCARD', k) end return n"
)


def _in_flight(api: KubeAPIServer) -> int:
    """Leases held: reservations and parallel slots not yet given back (a request holds
    one under each hash tag it counts under, so 0 means none in flight)."""
    return int(_redis(api, "EVAL", _COUNT_LEASES, "0", keyspace.LEASES_PATTERN))


def _ready_app(installed: Installed, name: str, team_spec: dict[str, Any],
               key_spec: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Team, ApiKey, Secret and an injected Deployment `name`; its one Ready Pod's name."""
    api = installed.api
    apply(api, *team_and_key(APPS, name, f"sk-cluster-{name}-0001", team_spec, key_spec or {}))
    waited = api.kubectl(
        "wait", "-n", APPS, f"apikey/{name}", "--for=condition=Ready", "--timeout=120s",
        timeout=150,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    apply(api, app_deployment(APPS, name, installed.image))
    rolled = api.kubectl(
        "rollout", "status", "-n", APPS, f"deployment/{name}", "--timeout=180s", timeout=200
    )
    assert rolled.returncode == 0, rolled.stderr + diagnose(api)
    (pod,) = [p for p in pods(api, APPS, name) if "deletionTimestamp" not in p["metadata"]]
    return str(pod["metadata"]["name"])


def test_the_operator_runs_and_the_api_server_calls_its_webhook(installed: Installed) -> None:
    api = installed.api
    deployment = get_json(api, "deployment", "-n", SYSTEM_NAMESPACE, f"{RELEASE}-llmquota")
    assert deployment["status"].get("readyReplicas") == 1
    # A server-side dry run goes through the admission webhooks, over the chart's TLS.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": APPS,
                     "annotations": {"llmquota.dev/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": installed.image}]},
    }  # fmt: skip
    result = api.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod)
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == SIDECAR
    assert sidecar["restartPolicy"] == "Always"


def test_an_injected_app_is_served_then_refused_by_its_budget(installed: Installed) -> None:
    api = installed.api
    pod = _ready_app(installed, "chatbot", TINY_BUDGET)
    answer = run_client(api, APPS, pod, "-", "-")
    assert answer == {"base_url": "http://127.0.0.1:4000/v1", "statuses": [200, 402]}

    def refusal_logged() -> bool:
        logs = api.kubectl("logs", "-n", APPS, pod, "-c", SIDECAR).stdout
        lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        return any(line.get("outcome") == "budget_exceeded" for line in lines)

    # The sidecar's request log lines are JSON, written in batches.
    wait_for(refusal_logged, "the refusal in the sidecar's log", timeout=30)


def test_sidecar_metrics_are_scraped_at_the_pod_ip(installed: Installed) -> None:
    api = installed.api
    pod_name = _ready_app(installed, "scraped", AMPLE_BUDGET)
    assert run_client(api, APPS, pod_name, "-")["statuses"] == [200]
    pod_ip = get_json(api, "pod", "-n", APPS, pod_name)["status"]["podIP"]
    assert pod_ip.startswith(POD_CIDR.split(".0.0/")[0] + ".")
    status, body = installed.cluster.http_get(f"http://{pod_ip}:4001/metrics")
    assert status == 200, body
    served = [
        line
        for line in body.splitlines()
        if line.startswith("llmquota_requests_total{") and 'outcome="served"' in line
    ]
    assert served, body[-2000:]
    # The proxy itself is not on the Pod's IP: only the app in the Pod can spend.
    status, _ = installed.cluster.http_get(f"http://{pod_ip}:4000/v1/models", timeout=5)
    assert status == 0


def test_a_job_with_the_sidecar_completes(installed: Installed) -> None:
    api = installed.api
    apply(api, *team_and_key(APPS, "batch", "sk-cluster-batch-0001", AMPLE_BUDGET, {}))
    waited = api.kubectl(
        "wait", "-n", APPS, "apikey/batch", "--for=condition=Ready", "--timeout=120s",
        timeout=150,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    apply(api, client_job(APPS, "batch", installed.image, "batch-key"))
    completed = api.kubectl(
        "wait", "-n", APPS, "job/batch", "--for=condition=Complete", "--timeout=180s",
        timeout=200,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr + diagnose(api)
    logs = api.kubectl("logs", "-n", APPS, "job/batch", "-c", "app").stdout
    assert json.loads(logs.strip().splitlines()[-1])["statuses"] == [200]


def _slow_request(api: KubeAPIServer, pod: str) -> subprocess.Popen[str]:
    """A stream that lasts about a minute: it holds the key's one parallel slot."""
    process = subprocess.Popen(
        [str(api.kubectl_path), f"--kubeconfig={api.kubeconfig}", "exec", "-n", APPS, pod,
         "-c", "app", "--", "python3", "-c", CLIENT_SCRIPT, "stream"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    wait_for(lambda: _in_flight(api) >= 1, "the slow request in flight", timeout=60)
    return process


def _gone(api: KubeAPIServer, pod: str) -> None:
    gone = api.kubectl(
        "wait", "-n", APPS, f"pod/{pod}", "--for=delete", "--timeout=120s", timeout=150
    )
    assert gone.returncode == 0, gone.stderr


def test_restarts_and_deletions_leak_no_slots_or_reservations(installed: Installed) -> None:
    """With maxParallelRequests 1, a slot left behind would refuse the next request."""
    api = installed.api
    name = "steady"
    pod = _ready_app(installed, name, AMPLE_BUDGET, {"rateLimit": {"maxParallelRequests": 1}})
    assert _in_flight(api) == 0
    slow = _slow_request(api, pod)
    try:
        assert run_client(api, APPS, pod, "-")["statuses"] == [429]
        # A rolling restart: the old Pod terminates while its request is in flight.
        restarted = api.kubectl("rollout", "restart", "-n", APPS, f"deployment/{name}")
        assert restarted.returncode == 0, restarted.stderr
        rolled = api.kubectl(
            "rollout", "status", "-n", APPS, f"deployment/{name}", "--timeout=180s",
            timeout=200,
        )  # fmt: skip
        assert rolled.returncode == 0, rolled.stderr
        _gone(api, pod)
    finally:
        slow.kill()
        slow.wait(timeout=30)
    # Freed by the sidecar as its Pod stopped, not by the lease running out (30 s).
    wait_for(lambda: _in_flight(api) == 0, "the restarted Pod's lease freed", timeout=5)
    (pod,) = [p["metadata"]["name"] for p in pods(api, APPS, name)
              if "deletionTimestamp" not in p["metadata"]]  # fmt: skip
    wait_for(
        lambda: get_json(api, "pod", "-n", APPS, pod)["status"].get("podIP") is not None,
        "the new Pod's address",
    )
    assert run_client(api, APPS, pod, "-")["statuses"] == [200]

    slow = _slow_request(api, pod)
    try:
        deleted = api.kubectl("delete", "pod", "-n", APPS, pod, "--wait=true", timeout=150)
        assert deleted.returncode == 0, deleted.stderr
    finally:
        slow.kill()
        slow.wait(timeout=30)
    wait_for(lambda: _in_flight(api) == 0, "the deleted Pod's lease freed", timeout=5)
    rolled = api.kubectl(
        "rollout", "status", "-n", APPS, f"deployment/{name}", "--timeout=180s", timeout=200
    )
    assert rolled.returncode == 0, rolled.stderr
    (pod,) = [p["metadata"]["name"] for p in pods(api, APPS, name)
              if "deletionTimestamp" not in p["metadata"]]  # fmt: skip
    assert run_client(api, APPS, pod, "-")["statuses"] == [200]
