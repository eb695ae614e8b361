"""Flag defaults from LLMQUOTA_<FLAG>: one reading of a switch for the sidecar and the
operator (the operator took "on" for false before they shared it)."""

from __future__ import annotations

import argparse

import pytest

from llmquota.operator.command import add_arguments as operator_arguments
from llmquota.sidecar.command import add_arguments as sidecar_arguments


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("", False),
     ("off", False), ("no", False)],
)  # fmt: skip
def test_a_switch_reads_the_same_in_both_commands(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("LLMQUOTA_FAIL_OPEN", value)
    for add_arguments in (operator_arguments, sidecar_arguments):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        assert parser.parse_args([]).fail_open is expected, add_arguments.__module__
