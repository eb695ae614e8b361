"""The README's demo, run as a user runs it: every step it promises is printed."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_demo_walks_through_every_step() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "llmquota.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = finished.stdout
    assert finished.returncode == 0, output + finished.stderr
    assert "1. A request within the team's budget is served" in output
    assert "HTTP 402" in output
    assert "Budget has been exceeded for team qa-prod-bot" in output
    assert "HTTP 429" in output
    assert "served again" in output
    assert "Done: stopped" in output
