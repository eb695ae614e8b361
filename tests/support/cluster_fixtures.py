"""pytest plugin: one real one-node cluster per test session, for tests that run Pods.

``kube_cluster`` (session)
    A :class:`~tests.support.kube_node.KubeCluster`: ``.api`` is a ``KubeAPIServer``
    (kubeconfig, token, ``.kubectl()``) reached through a relay on 127.0.0.1,
    ``.images`` names the images the node has (pause, llmquota, redis),
    ``.in_namespace(*argv)`` and ``.http_get(url)`` reach Pod and Service IPs.

What it needs is made after collection and outside any test, so pytest-timeout does
not cut it short: the API servers (``testbed/build.sh``), the node binaries
(``testbed/build.sh node``, about a minute on Go's warm cache) and the images (about a
minute for the Debian base, once). When something cannot be had, the tests fail; they
are skipped only with ``LLMQUOTA_ALLOW_NO_TESTBED=1``, as for the API-server test bed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .cluster_images import ClusterImages, build_images
from .kube_apiserver import Binaries, TestbedUnavailableError, build_testbed, find_binaries
from .kube_node import (
    KubeCluster,
    NodeBinaries,
    build_node,
    find_node_binaries,
    missing_host_tools,
    run_kube_cluster,
)

__all__ = ["kube_cluster"]

_PREPARED = pytest.StashKey["tuple[Binaries, NodeBinaries, ClusterImages] | str"]()


def _prepare(config: pytest.Config) -> tuple[Binaries, NodeBinaries, ClusterImages] | str:
    missing = missing_host_tools()
    if missing:
        return f"the cluster test bed needs: {', '.join(missing)} (see docs/testbed.md)"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            "kube cluster: building or reusing the node binaries and images", yellow=True
        )
    try:
        binaries = find_binaries()
        if binaries is None:
            build_testbed("all")
            binaries = find_binaries()
        node = find_node_binaries()
        if node is None:
            build_node()
            node = find_node_binaries()
        images = build_images()
    except (TestbedUnavailableError, RuntimeError, OSError) as error:
        return str(error)
    if binaries is None or node is None:
        return "testbed/build.sh ran but a binary is still missing"
    return binaries, node, images


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build what the cluster needs before the first test, if a collected test uses it."""
    if session.config.option.collectonly:
        return
    if any("kube_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[_PREPARED] = _prepare(session.config)


@pytest.fixture(scope="session")
def kube_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """The cluster, started once; stopped, and every trace of it removed, at the end."""
    prepared = request.config.stash.get(_PREPARED, None)
    if prepared is None:
        prepared = _prepare(request.config)
    if isinstance(prepared, str):
        if os.environ.get("LLMQUOTA_ALLOW_NO_TESTBED") == "1":
            pytest.skip(f"no cluster test bed (LLMQUOTA_ALLOW_NO_TESTBED=1): {prepared}")
        pytest.fail(f"no cluster test bed: {prepared}", pytrace=False)
    binaries, node, images = prepared
    # A short path: unix sockets (containerd's, the API relay's) allow 108 bytes.
    workdir = tmp_path_factory.mktemp("cluster")
    with run_kube_cluster(binaries, node, images, workdir) as cluster:
        yield cluster
