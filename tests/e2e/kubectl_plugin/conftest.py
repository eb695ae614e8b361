"""Fixtures for `kubectl llmquota`'s tests: the plugin runner, a seeded namespace and
kubeconfig variants."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from tests.e2e.kubectl_plugin.plugin_bed import PluginRunner, seed

if TYPE_CHECKING:
    from tests.support.kube_apiserver import KubeAPIServer


@pytest.fixture
def plugin(kube_apiserver: KubeAPIServer, kube_namespace: str) -> PluginRunner:
    return PluginRunner(kube_apiserver, kube_namespace)


@pytest.fixture
def seeded(plugin: PluginRunner) -> PluginRunner:
    seed(plugin)
    return plugin


@pytest.fixture
def kubeconfig_with(kube_apiserver: KubeAPIServer, tmp_path: Path) -> Callable[..., Path]:
    """A copy of the test bed's kubeconfig with changes to its current context."""

    def make(
        namespace: str | None = None, token: str | None = None, context_name: str | None = None
    ) -> Path:
        """`namespace` for the current context, or for a new one named `context_name`."""
        document = yaml.safe_load(kube_apiserver.kubeconfig.read_text())
        context = next(
            item for item in document["contexts"] if item["name"] == document["current-context"]
        )
        if context_name is not None:
            context = {"name": context_name, "context": dict(context["context"])}
            document["contexts"].append(context)
        if namespace is not None:
            context["context"]["namespace"] = namespace
        if token is not None:
            user = next(
                item for item in document["users"] if item["name"] == context["context"]["user"]
            )
            user["user"] = {"token": token}
        path = tmp_path / f"kubeconfig-{len(list(tmp_path.iterdir()))}"
        path.write_text(yaml.safe_dump(document))
        return path

    return make
