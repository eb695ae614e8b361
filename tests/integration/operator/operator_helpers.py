"""Helpers for operator integration tests: waiting with deadlines, kubectl in a namespace,
an operator's configuration, and an operator started and stopped inside a test."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from kopf.testing import KopfRunner
from tests.support.waiting import wait_until_sync

from llmquota.operator.config import HostPort, OperatorConfig, SidecarConfig
from llmquota.operator.handlers import build_registry
from llmquota.policy.admission import RequestEstimate, admission_call
from llmquota.policy.decision import Admitted, Refused, interpret_admit
from llmquota.policy.limits import ResolvedPolicy, nanos
from llmquota.store import QuotaStore

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

__all__ = [
    "STATUS_INTERVAL",
    "Cluster",
    "admit",
    "collect_operator_leftovers",
    "operator_config",
    "operator_running",
    "spend",
    "wait_for",
]

T = TypeVar("T")
STATUS_INTERVAL = 0.5


def wait_for(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    return wait_until_sync(probe, timeout, what=what or repr(probe))


class Cluster:
    """kubectl in one namespace, with JSON helpers."""

    def __init__(self, kube: KubeAPIServer, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.kube.kubectl("-n", self.namespace, *args, input=input)
        if result.returncode != 0:
            msg = f"kubectl {' '.join(args)}: {result.stderr}"
            raise AssertionError(msg)
        return result.stdout

    def apply(self, *manifests: dict[str, Any]) -> None:
        items = [{"apiVersion": "llmquota.dev/v1alpha1", **m} for m in manifests]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.kube.kubectl("-n", self.namespace, "get", kind, name, "-o", "json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        return next(
            (c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_),
            None,
        )

    def events(self, reason: str) -> list[dict[str, Any]]:
        listed = json.loads(self.kubectl("get", "events", "-o", "json"))
        return [e for e in listed["items"] if e.get("reason") == reason]


def operator_config(redis_url: str, namespace: str, **overrides: Any) -> OperatorConfig:
    """A config for tests: one namespace, fast status sync, loopback listeners."""
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "namespaces": (namespace,),
        "health_listen": HostPort("127.0.0.1", 0),
        "status_interval": STATUS_INTERVAL,
        "recovery_interval": 0.2,
        "sidecar": SidecarConfig(image="llmquota:test", redis_url=redis_url),
    }
    return OperatorConfig(**(base | overrides))


def collect_operator_leftovers() -> None:
    """Collect what a stopped in-process operator's loop left behind.

    KopfRunner runs the operator on an event loop in a thread; connections whose close
    raced that loop's end (pooled Redis connections cancelled mid-call) are freed only
    by a later garbage collection, whose ResourceWarning would then fail whichever
    unrelated test was running. A real operator exits with its process.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@contextmanager
def operator_running(
    kube: KubeAPIServer, namespace: str, redis_url: str, **overrides: Any
) -> Iterator[KopfRunner]:
    """An operator watching `namespace` for the length of a `with` block."""
    os.environ["KUBECONFIG"] = str(kube.kubeconfig)
    config = operator_config(redis_url, namespace, **overrides)
    with KopfRunner(
        ["run", "--standalone", "--namespace", namespace],
        registry=build_registry(config),
        timeout=60,
    ) as runner:
        yield runner
    collect_operator_leftovers()
    assert runner.exception is None or isinstance(runner.exception, SystemExit), runner.output


def admit(
    redis_url: str, policy: ResolvedPolicy, cost_usd: float, *, settle_usd: float | None = None
) -> Admitted | Refused:
    """One request as the sidecar makes it (real admit.lua); settled when `settle_usd`."""

    async def run() -> Admitted | Refused:
        store = QuotaStore.from_url(redis_url)
        try:
            request_id = uuid.uuid4().hex
            call = admission_call(
                policy, RequestEstimate("gpt-4o-mini", nanos(cost_usd), 100), request_id, 60_000
            )
            decision = interpret_admit(await store.admit(call), call)
            if isinstance(decision, Admitted) and settle_usd is not None:
                assert await store.settle(request_id, nanos(settle_usd), 100) == 1
            return decision
        finally:
            await store.close()

    return asyncio.run(run())


def spend(redis_url: str, policy: ResolvedPolicy, usd: float) -> None:
    """Spend `usd` through the key's policy, as an admitted and settled request."""
    decision = admit(redis_url, policy, usd, settle_usd=usd)
    assert isinstance(decision, Admitted), decision
