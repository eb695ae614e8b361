"""What the real-pod tests install, as a user would: the chart, an upstream, apps.

Manifests are plain dicts (applied as JSON, which kubectl reads as YAML); the apps run
the project's image, which has python3 and the `openai` package, and call the sidecar
through the OPENAI_BASE_URL the webhook sets.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from typing import Any

from tests.support.kube_apiserver import KubeAPIServer, cache_dir
from tests.support.waiting import wait_until_sync

RELEASE = "lq"
APPS = "apps"
SYSTEM_NAMESPACE = "llmquota-system"
UPSTREAM_NAMESPACE = "upstream"
UPSTREAM_KEY = "sk-upstream-real"
UPSTREAM_URL = f"http://fake-upstream.{UPSTREAM_NAMESPACE}.svc:8080"
SIDECAR = "llmquota-sidecar"
WAIT_S = 180.0

CLIENT_SCRIPT = textwrap.dedent(
    """\
    # One request per argument through the sidecar, as an app would make it: the official
    # client, configured only by OPENAI_BASE_URL and OPENAI_API_KEY. `-`: a plain request;
    # `stream`: a streamed one, read to its end (the fake upstream makes it last a minute).
    import json, os, sys
    import openai

    client = openai.OpenAI(max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "hello"}]
    statuses = []
    for kind in sys.argv[1:]:
        try:
            if kind == "stream":
                with client.chat.completions.with_streaming_response.create(
                    model="gpt-4o-mini", messages=messages, stream=True
                ) as response:
                    for _ in response.iter_lines():
                        pass
                    statuses.append(response.http_response.status_code)
            else:
                response = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=messages
                )
                statuses.append(response.http_response.status_code)
        except openai.APIStatusError as error:
            statuses.append(error.status_code)
    print(json.dumps({"base_url": os.environ["OPENAI_BASE_URL"], "statuses": statuses}))
    """
)
"""Arguments: one per request, `-` (plain) or `stream` (lasts about a minute)."""
# Streams take STREAM_CHUNKS x STREAM_CHUNK_DELAY_MS; whole answers are not slowed.
STREAM_CHUNKS = 400
STREAM_CHUNK_DELAY_MS = 150


def helm(api: KubeAPIServer, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The cached helm against the cluster."""
    return subprocess.run(
        [str(cache_dir() / "bin" / "helm"), f"--kubeconfig={api.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def apply(api: KubeAPIServer, *manifests: dict[str, Any]) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    result = api.kubectl("apply", "-f", "-", input=json.dumps(document))
    assert result.returncode == 0, result.stderr


def get_json(api: KubeAPIServer, *args: str) -> Any:
    result = api.kubectl("get", *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``check`` (itself a cluster round trip) until true, failing after ``timeout``."""
    wait_until_sync(check, timeout, poll_s=0.5, what=what)


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def fake_upstream(image: str) -> list[dict[str, Any]]:
    """The project's fake OpenAI API as a Deployment and Service: the sidecars' upstream."""
    labels = {"app": "fake-upstream"}
    return [
        namespace(UPSTREAM_NAMESPACE),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "fake-upstream", "namespace": UPSTREAM_NAMESPACE},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "fake-upstream",
                                "image": image,
                                "args": [
                                    "fake-upstream",
                                    "--listen",
                                    "0.0.0.0:8080",
                                    "--require-key",
                                    UPSTREAM_KEY,
                                    "--chunks",
                                    str(STREAM_CHUNKS),
                                    "--chunk-delay-ms",
                                    str(STREAM_CHUNK_DELAY_MS),
                                ],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/_fake/requests", "port": "http"},
                                    "periodSeconds": 2,
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "fake-upstream", "namespace": UPSTREAM_NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": "http"}]},
        },
    ]


def team_and_key(
    namespace_name: str, name: str, key: str, team_spec: dict[str, Any], key_spec: dict[str, Any]
) -> list[dict[str, Any]]:
    """The key's Secret, a Team and an ApiKey in it.

    The Secret comes first: the operator generates one for an ApiKey whose Secret is
    missing, and a later create of ours would then fail.
    """
    group = "llmquota.dev/v1alpha1"
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-key", "namespace": namespace_name},
            "stringData": {"key": key},
        },
        {
            "apiVersion": group,
            "kind": "Team",
            "metadata": {"name": name, "namespace": namespace_name},
            "spec": team_spec,
        },
        {
            "apiVersion": group,
            "kind": "ApiKey",
            "metadata": {"name": name, "namespace": namespace_name},
            "spec": {"team": name, "secretName": f"{name}-key", **key_spec},
        },
    ]


def _app_pod_spec(image: str, key_secret: str, command: list[str]) -> dict[str, Any]:
    return {
        "terminationGracePeriodSeconds": 10,
        "containers": [
            {
                "name": "app",
                "image": image,
                "command": command,
                "env": [
                    {
                        "name": "OPENAI_API_KEY",
                        "valueFrom": {"secretKeyRef": {"name": key_secret, "key": "key"}},
                    }
                ],
            }
        ],
    }


def app_deployment(namespace_name: str, name: str, image: str) -> dict[str, Any]:
    """An app that idles; the tests run the client in it with `kubectl exec`."""
    labels = {"app": name}
    idle = ["python3", "-c", "import signal; signal.pause()"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace_name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"llmquota.dev/inject": "true"}},
                "spec": _app_pod_spec(image, f"{name}-key", idle),
            },
        },
    }


def client_job(namespace_name: str, name: str, image: str, key_secret: str) -> dict[str, Any]:
    """A Job whose one container makes one request and exits."""
    spec = _app_pod_spec(image, key_secret, ["python3", "-c", CLIENT_SCRIPT, "-"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace_name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"llmquota.dev/inject": "true"}},
                "spec": {**spec, "restartPolicy": "Never"},
            },
        },
    }


def pods(api: KubeAPIServer, namespace_name: str, app: str) -> list[dict[str, Any]]:
    listed = get_json(api, "pods", "-n", namespace_name, "-l", f"app={app}")
    found: list[dict[str, Any]] = listed["items"]
    return found


def run_client(
    api: KubeAPIServer, namespace_name: str, pod: str, *requests: str, timeout: float = 150
) -> dict[str, Any]:
    """Run CLIENT_SCRIPT in the pod's app container; its JSON answer."""
    result = api.kubectl(
        "exec", "-n", namespace_name, pod, "-c", "app", "--",
        "python3", "-c", CLIENT_SCRIPT, *requests,
        timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def keyless_deployment(
    namespace_name: str, name: str, image: str, labels: dict[str, str]
) -> dict[str, Any]:
    """An injected app holding no virtual key: the openai client insists on an API key, so
    it sends one no ApiKey has, as an app configured for the real upstream would."""
    idle = ["python3", "-c", "import signal; signal.pause()"]
    app = {
        "name": "app",
        "image": image,
        "command": idle,
        "env": [{"name": "OPENAI_API_KEY", "value": "sk-no-virtual-key"}],
    }
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace_name},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**selector, **labels},
                    "annotations": {"llmquota.dev/inject": "true"},
                },
                "spec": {"terminationGracePeriodSeconds": 10, "containers": [app]},
            },
        },
    }


def rolled_out_pod(api: KubeAPIServer, namespace_name: str, name: str) -> str:
    """Wait for Deployment `name` to roll out; the name of its one live Pod."""
    rolled = api.kubectl(
        "rollout", "status", "-n", namespace_name, f"deployment/{name}", "--timeout=180s",
        timeout=200,
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr
    (pod,) = [
        p for p in pods(api, namespace_name, name) if "deletionTimestamp" not in p["metadata"]
    ]
    return str(pod["metadata"]["name"])
