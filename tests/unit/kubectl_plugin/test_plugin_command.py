"""The command line is checked before any connection, as kubectl does: a bad target is a
usage error (exit 2), not a connection error."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmquota.kubectl_plugin import main


@pytest.fixture(autouse=True)
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["why", "team/qa"], "why takes one ApiKey"),
        (["why", "apikey"], "why takes one ApiKey"),
        (["why", "apikey/a", "b"], "why takes one ApiKey"),
        (["why", "apikey/a", "--global-budget", "no-slash"], "is not NAMESPACE/NAME"),
        (["usage", "team/qa", "-A"], "drop -A"),
        (["usage", "budgets"], "unknown kind 'budgets'"),
        (["top", "--sort", "cost"], "invalid choice: 'cost'"),
    ],
)
def test_usage_errors_exit_2_before_connecting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["why", "apikey/a"], ["why", "apikey", "a"], ["top", "teams"]])
def test_good_targets_go_on_to_connect(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "error: no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster\n"
    )
