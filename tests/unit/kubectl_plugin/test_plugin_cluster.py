"""Finding the operator's --global-budget in its Deployment's container, and the
kubeconfig files kubectl would read."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmquota.kubectl_plugin.cluster import ClusterError, _kubeconfig_files, global_budget_flag


@pytest.mark.parametrize(
    ("container", "found"),
    [
        ({"args": ["--peering=x", "--global-budget=ops/all"]}, "ops/all"),
        ({"command": ["llmquota", "operator", "--global-budget", "ops/all"]}, "ops/all"),
        ({"env": [{"name": "LLMQUOTA_GLOBAL_BUDGET", "value": "ops/env"}]}, "ops/env"),
        ({"args": ["--peering=x"], "env": [{"name": "OTHER", "value": "1"}]}, None),
        ({"args": ["--global-budget"]}, None),
    ],
)
def test_global_budget_flag(container: dict[str, object], found: str | None) -> None:
    assert global_budget_flag(container) == found


def test_kubeconfig_files_keep_the_existing_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = tmp_path / "a"
    present.write_text("{}")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{present}")
    assert _kubeconfig_files(None) == str(present)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _kubeconfig_files(None) is None
    with pytest.raises(ClusterError, match="no such file"):
        _kubeconfig_files(str(tmp_path / "absent"))
