"""The plugin's only I/O: the kubeconfig, as kubectl reads it, and the API reads.

kubectl's rules: `--kubeconfig`, else `KUBECONFIG` (a list of files, merged), else
`~/.kube/config`, else the in-cluster service account; `--context` picks a context,
and the namespace is `-n`, else the context's, else `default`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from llmquota.models import API_GROUP, API_VERSION

__all__ = ["Cluster", "ClusterError", "global_budget_flag"]

NOT_FOUND = 404
FORBIDDEN = 403
REQUEST_TIMEOUT_SECONDS = 30
PAGE_SIZE = 500
MAX_PAGES = 10_000
"""Bounds a paginated list (5 million objects) in case a server keeps answering `continue`."""
OPERATOR_SELECTOR = "app.kubernetes.io/part-of=llmquota,app.kubernetes.io/component=operator"
"""The labels the chart puts on the operator's Deployment."""
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ClusterError(Exception):
    """The cluster could not be reached or refused a read; the message is one line."""


def _api_message(error: ApiException) -> str:
    """`Forbidden: apikeys.llmquota.dev is forbidden: ...`, from the Status in the body."""
    message = ""
    try:
        body = json.loads(error.body or "")
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
    except ValueError:
        message = str(error.body or "").strip()
    return f"{error.reason} ({error.status}): {message}" if message else f"{error.reason}"


def _kubeconfig_files(explicit: str | None) -> str | None:
    """The kubeconfig path list kubectl would read; None when none of its files exists."""
    paths = explicit or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if explicit and not Path(explicit).expanduser().is_file():
        msg = f"--kubeconfig {explicit}: no such file"
        raise ClusterError(msg)
    present = [path for path in paths.split(os.pathsep) if Path(path).expanduser().is_file()]
    return os.pathsep.join(present) if present else None


def _in_cluster_namespace() -> str:
    """The Pod's namespace, as kubectl in a Pod defaults to."""
    return _IN_CLUSTER_NAMESPACE.read_text().strip() or "default"


def global_budget_flag(container: Mapping[str, Any]) -> str | None:
    """The --global-budget a container runs the operator with (flag or env), if any."""
    args = [str(arg) for arg in [*(container.get("command") or []), *(container.get("args") or [])]]
    for index, arg in enumerate(args):
        if arg.startswith("--global-budget="):
            return arg.partition("=")[2] or None
        if arg == "--global-budget" and index + 1 < len(args):
            return args[index + 1]
    for variable in container.get("env") or []:
        if variable.get("name") == "LLMQUOTA_GLOBAL_BUDGET" and variable.get("value"):
            return str(variable["value"])
    return None


@dataclass(slots=True)
class Cluster:
    """A kubernetes_asyncio client and the namespace kubectl would default to."""

    api_client: client.ApiClient
    namespace: str

    @classmethod
    async def connect(cls, kubeconfig: str | None, context: str | None) -> Self:
        """Load credentials as kubectl does; ClusterError when there are none."""
        configuration = client.Configuration()
        files = _kubeconfig_files(kubeconfig)
        try:
            if files is None:
                if "KUBERNETES_SERVICE_HOST" not in os.environ:
                    msg = "no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster"
                    raise ClusterError(msg)
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                namespace = _in_cluster_namespace()
            else:
                loader = await config.load_kube_config(
                    config_file=files,
                    context=context,
                    client_configuration=configuration,
                    persist_config=False,
                )
                current = loader.current_context or {}
                namespace = (current.get("context") or {}).get("namespace") or "default"
        except (ConfigException, OSError) as error:
            msg = f"kubeconfig: {error}"
            raise ClusterError(msg) from error
        return cls(client.ApiClient(configuration), namespace)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.api_client.close()

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call; errors become one-line ClusterErrors."""
        try:
            return await method(*args, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
        except ApiException as error:
            raise ClusterError(_api_message(error)) from error
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            host = self.api_client.configuration.host
            msg = f"cannot reach the API server at {host}: {error or type(error).__name__}"
            raise ClusterError(msg) from error

    async def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every llmquota object of a kind, in one namespace or (None) in all."""
        custom = client.CustomObjectsApi(self.api_client)
        items: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            page_args: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                page_args["_continue"] = token
            if namespace is None:
                page = await self._call(
                    custom.list_cluster_custom_object, API_GROUP, API_VERSION, plural, **page_args
                )
            else:
                page = await self._call(
                    custom.list_namespaced_custom_object,
                    API_GROUP,
                    API_VERSION,
                    namespace,
                    plural,
                    **page_args,
                )
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        return items

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One llmquota object; None when it does not exist."""
        custom = client.CustomObjectsApi(self.api_client)
        try:
            found: dict[str, Any] = await self._call(
                custom.get_namespaced_custom_object, API_GROUP, API_VERSION, namespace, plural, name
            )
        except ClusterError as error:
            cause = error.__cause__
            if isinstance(cause, ApiException) and cause.status == NOT_FOUND:
                return None
            raise
        return found

    async def operator_global_budgets(self) -> Sequence[str] | None:
        """The --global-budget values of the llmquota operators' Deployments (found by the
        chart's labels); None when Deployments may not be listed."""
        apps = client.AppsV1Api(self.api_client)
        try:
            deployments = await self._call(
                apps.list_deployment_for_all_namespaces, label_selector=OPERATOR_SELECTOR
            )
        except ClusterError as error:
            cause = error.__cause__
            if isinstance(cause, ApiException) and cause.status == FORBIDDEN:
                return None
            raise
        found = []
        for deployment in self.api_client.sanitize_for_serialization(deployments)["items"]:
            template = deployment.get("spec", {}).get("template", {})
            for container in template.get("spec", {}).get("containers", []):
                value = global_budget_flag(container)
                if value is not None and value not in found:
                    found.append(value)
        return found
