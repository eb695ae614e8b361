"""The Kubernetes API calls the operator makes itself: the one module that does.

kopf watches, indexes and patches the object a handler runs for (the handler's status
goes out with kopf's own patch, in the same API call as kopf's annotations); every other
call goes through `KubernetesStorage`: the ApiKey's Secret, the statuses of objects other
than the handled one (keys re-resolved because something they depend on changed, the
status sync), every Event, the listing for the orphan sweep, and the sidecar's ConfigMap
and credential Secret mirrored into workload namespaces.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from llmquota.models import API_GROUP, API_VERSION, ApiKey, Budget, BudgetOverride, RateLimit, Team
from llmquota.operator.rules.mirrored_objects import MirrorKind
from llmquota.operator.rules.orphans import LiveKey
from llmquota.policy.identity import OwnerRef

__all__ = ["PLURALS", "KubeObject", "KubernetesStorage"]

logger = logging.getLogger(__name__)

NOT_FOUND = 404
CONFLICT = 409
EVENT_MESSAGE_LIMIT = 1024
REPORTING_COMPONENT = "llmquota-operator"

PAGE_SIZE = 500
MAX_PAGES = 10_000
"""A bound on one listing's pages (5 million objects): no loop runs unbounded."""

PLURALS = {
    "ApiKey": "apikeys",
    "Team": "teams",
    "Budget": "budgets",
    "RateLimit": "ratelimits",
    "BudgetOverride": "budgetoverrides",
}
"""The resource (URL path) of each llmquota kind."""


@dataclass(frozen=True, slots=True)
class KubeObject:
    """Which llmquota object a status or an Event is about."""

    kind: str
    namespace: str
    name: str
    uid: str | None
    generation: int | None = None
    api_version: str = f"{API_GROUP}/{API_VERSION}"

    @classmethod
    def of(cls, obj: ApiKey | Team | Budget | RateLimit | BudgetOverride) -> Self:
        """The reference of a parsed object."""
        meta = obj.metadata
        return cls(obj.kind, meta.namespace, meta.name, meta.uid, meta.generation, obj.api_version)

    @classmethod
    def of_body(cls, body: Mapping[str, Any]) -> Self:
        """The reference of a raw body (one that did not validate)."""
        meta = body["metadata"]
        return cls(
            str(body.get("kind")),
            str(meta.get("namespace")),
            str(meta.get("name")),
            meta.get("uid"),
            meta.get("generation"),
            str(body.get("apiVersion") or f"{API_GROUP}/{API_VERSION}"),
        )


class KubernetesStorage:
    """A kubernetes_asyncio client for Secrets, llmquota statuses, Events and mirrors."""

    def __init__(self, api_client: client.ApiClient) -> None:
        """Wrap a configured client."""
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)

    @classmethod
    async def connect(cls) -> Self:
        """In-cluster credentials when in a Pod, else the current kubeconfig."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException:
            # Read KUBECONFIG now: kubernetes_asyncio reads it once, at import.
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        """Close the connection pool."""
        await self.api_client.close()

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret as a dict, None when it does not exist."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == NOT_FOUND:
                return None
            raise
        found: dict[str, Any] = self.api_client.sanitize_for_serialization(secret)
        return found

    async def job_controller(self, namespace: str, name: str) -> OwnerRef | None:
        """The controller of a Job (its CronJob), None when it has none or cannot be read.

        The injection webhook asks, so that a CronJob's Pods are charged to the CronJob
        (docs/keyless.md); an unreadable Job leaves them charged to the Job itself.
        """
        try:
            job = await self.batch.read_namespaced_job(name, namespace)
        except (ApiException, OSError) as error:
            logger.warning("Job %s/%s unreadable, its Pods are its own workload: %s",
                           namespace, name, error)  # fmt: skip
            return None
        owners = job.metadata.owner_references or []
        return next(
            (
                OwnerRef(kind=owner.kind, name=owner.name, controller=True)
                for owner in owners
                if owner.controller
            ),
            None,
        )

    async def create_secret(self, body: Mapping[str, Any]) -> bool:
        """Create a Secret; False when one of that name appeared meanwhile."""
        try:
            await self.core.create_namespaced_secret(
                body["metadata"]["namespace"],
                dict(body),  # type: ignore[arg-type]  # the client serialises dicts as they are
            )
        except ApiException as error:
            if error.status == CONFLICT:
                return False
            raise
        return True

    async def read_object(
        self, kind: MirrorKind, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """A ConfigMap or Secret as a dict, None when it does not exist."""
        read = (
            self.core.read_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.read_namespaced_secret
        )
        try:
            found = await read(name, namespace)
        except ApiException as error:
            if error.status == NOT_FOUND:
                return None
            raise
        plain: dict[str, Any] = self.api_client.sanitize_for_serialization(found)
        return plain

    async def create_object(self, kind: MirrorKind, body: Mapping[str, Any]) -> bool:
        """Create a ConfigMap or Secret; False when one of that name appeared meanwhile."""
        create = (
            self.core.create_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.create_namespaced_secret
        )
        try:
            await create(body["metadata"]["namespace"], dict(body))  # type: ignore[arg-type]
        except ApiException as error:
            if error.status == CONFLICT:
                return False
            raise
        return True

    async def merge_patch_object(
        self, kind: MirrorKind, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        """JSON-merge-patch a ConfigMap or Secret (a null removes a key)."""
        update = (
            self.core.patch_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.patch_namespaced_secret
        )
        await update(name, namespace, dict(patch), _content_type="application/merge-patch+json")  # type: ignore[call-arg]  # accepted via **kwargs, missing from the stubs

    async def labelled(
        self, kind: MirrorKind, selector: str, namespaces: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        """ConfigMaps or Secrets matching a label selector, in `namespaces` (empty: all)."""
        listings: list[Any] = []
        for namespace in namespaces or (None,):
            listings.append(await self._list(kind, namespace, selector))
        items: list[dict[str, Any]] = [
            self.api_client.sanitize_for_serialization(item)
            for listing in listings
            for item in listing.items
        ]
        return items

    async def _list(self, kind: MirrorKind, namespace: str | None, selector: str) -> Any:
        if kind == "ConfigMap":
            if namespace is None:
                return await self.core.list_config_map_for_all_namespaces(label_selector=selector)
            return await self.core.list_namespaced_config_map(namespace, label_selector=selector)
        if namespace is None:
            return await self.core.list_secret_for_all_namespaces(label_selector=selector)
        return await self.core.list_namespaced_secret(namespace, label_selector=selector)

    async def patch_secret_data(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """Merge `data` (base64 values) into an existing Secret."""
        await self.core.patch_namespaced_secret(name, namespace, {"data": dict(data)})

    async def patch_status(self, obj: KubeObject, status_patch: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource of an llmquota object (gone: ignored)."""
        try:
            await self.custom.patch_namespaced_custom_object_status(
                API_GROUP,
                API_VERSION,
                obj.namespace,
                PLURALS[obj.kind],
                obj.name,
                {"status": dict(status_patch)},
                _content_type="application/merge-patch+json",
            )  # type: ignore[call-arg]  # accepted via **kwargs, missing from the stubs
        except ApiException as error:
            if error.status != NOT_FOUND:
                raise

    async def list_apikeys(self, namespaces: tuple[str, ...]) -> list[LiveKey]:
        """(namespace, name) of every ApiKey in `namespaces` (empty: all), page by page.

        An ApiKey being deleted (deletionTimestamp set) is left out: it owns nothing.
        """
        live: list[LiveKey] = []
        for namespace in namespaces or (None,):
            token: str | None = None
            for _ in range(MAX_PAGES):
                page = await self._apikey_page(namespace, token)
                live.extend(
                    (str(item["metadata"]["namespace"]), str(item["metadata"]["name"]))
                    for item in page.get("items", [])
                    if not item["metadata"].get("deletionTimestamp")
                )
                token = (page.get("metadata") or {}).get("continue") or None
                if token is None:
                    break
        return live

    async def _apikey_page(self, namespace: str | None, token: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {"limit": PAGE_SIZE}
        if token:
            options["_continue"] = token
        page: dict[str, Any]
        if namespace is None:
            page = await self.custom.list_cluster_custom_object(
                API_GROUP, API_VERSION, "apikeys", **options
            )
        else:
            page = await self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, "apikeys", **options
            )
        return page

    async def post_event(self, obj: KubeObject, type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about `obj`."""
        now = datetime.now(UTC).isoformat()
        namespace = obj.namespace
        involved = {
            "apiVersion": obj.api_version,
            "kind": obj.kind,
            "name": obj.name,
            "namespace": obj.namespace,
            "uid": obj.uid,
        }
        body = {
            "metadata": {"namespace": namespace, "generateName": "llmquota-"},
            "type": type_,
            "reason": reason,
            "message": message[:EVENT_MESSAGE_LIMIT],
            "action": reason,
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": socket.gethostname(),
            "source": {"component": REPORTING_COMPONENT},
            "involvedObject": involved,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": now,
            "count": 1,
        }
        await self.core.create_namespaced_event(namespace, body)  # type: ignore[arg-type]  # the client serialises dicts as they are
