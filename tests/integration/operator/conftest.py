"""Fixtures for operator integration tests: CRDs, a real redis-server, a running operator.

One operator (kopf.testing.KopfRunner, in a thread) per test module, watching a namespace
of its own on the session's real kube-apiserver, with a fast status interval.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis
from kopf.testing import KopfRunner

from llmquota.operator.handlers import build_registry
from llmquota.store import EmbeddedRedis

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer

from tests.integration.operator.operator_helpers import (
    Cluster,
    collect_operator_leftovers,
    operator_config,
)


@pytest.fixture(scope="session")
def llmquota_crds(kube_apiserver: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CRDs from crds/ (applied by the session fixture) or generated from the models."""
    if kube_apiserver.kubectl("get", "crd", "apikeys.llmquota.dev").returncode == 0:
        return
    out = tmp_path_factory.mktemp("crds")
    subprocess.run([sys.executable, "-m", "llmquota.cli", "crds", "--write", str(out)], check=True)
    files = [arg for path in sorted(out.glob("*.yaml")) for arg in ("-f", str(path))]
    kube_apiserver.kubectl("apply", "--server-side", *files, check=True)
    kube_apiserver.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *files, check=True
    )


@pytest.fixture(scope="module")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def db(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the module's redis-server, closed after the test."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def namespace(
    kube_apiserver: KubeAPIServer, llmquota_crds: None, request: pytest.FixtureRequest
) -> Iterator[str]:
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"op-{module.replace('_', '-')[:30]}-{secrets.token_hex(3)}"
    kube_apiserver.kubectl("create", "namespace", name, check=True)
    yield name
    kube_apiserver.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def running_operator(
    kube_apiserver: KubeAPIServer,
    namespace: str,
    redis_server: EmbeddedRedis,
    request: pytest.FixtureRequest,
) -> Iterator[KopfRunner]:
    """`llmquota operator`'s registry under kopf's test runner, watching `namespace`.

    A module sets GLOBAL_BUDGET = "name" for an operator with --global-budget NS/name,
    FORECAST_SPAN = seconds for a --forecast-span other than the default hour.
    """
    os.environ["KUBECONFIG"] = str(kube_apiserver.kubeconfig)
    global_budget = getattr(request.module, "GLOBAL_BUDGET", None)
    overrides = {}
    if hasattr(request.module, "FORECAST_SPAN"):
        overrides["forecast_span"] = request.module.FORECAST_SPAN
    config = operator_config(
        redis_server.url,
        namespace,
        global_budget=None if global_budget is None else (namespace, global_budget),
        **overrides,
    )
    registry = build_registry(config)
    with KopfRunner(
        ["run", "--standalone", "--namespace", namespace],
        registry=registry,
        timeout=60,
    ) as runner:
        yield runner
    collect_operator_leftovers()
    assert runner.exception is None or isinstance(runner.exception, SystemExit), runner.output


@pytest.fixture
def cluster(kube_apiserver: KubeAPIServer, namespace: str, running_operator: KopfRunner) -> Cluster:
    return Cluster(kube_apiserver, namespace)
