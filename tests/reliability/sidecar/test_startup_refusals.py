"""A configuration mistake stops `llmquota sidecar` with one line naming it, never with
a traceback: a typo in the pricing file, a store URL of an unsupported form, a bad flag."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.e2e.sidecar.processes import LLMQUOTA, free_port

pytestmark = pytest.mark.e2e

EXIT_TIMEOUT_S = 60.0


def refusal(*flags: str, environment: dict[str, str] | None = None) -> str:
    """Start the sidecar with `flags`; its output, once it exited non-zero."""
    started = subprocess.run(
        [*LLMQUOTA, "sidecar", "--listen", f"127.0.0.1:{free_port()}", *flags],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
        env={**os.environ, **(environment or {})},
    )
    output = started.stdout + started.stderr
    assert started.returncode != 0, output
    assert "Traceback" not in output, output
    (line,) = output.strip().splitlines()
    return line


def test_a_pricing_file_typo_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text("models:\n  my-llama: {inputPerMillion: 0.2, outputPerMilion: 0.4}\n")
    line = refusal("--redis", "redis://127.0.0.1:1/0", "--pricing", str(pricing))
    assert line.startswith(f"llmquota sidecar: pricing file {pricing}: ")
    assert "models.my-llama.outputPerMilion: unknown key; expected one of inputPerMillion, " in line


def test_a_missing_pricing_file_is_one_line(tmp_path: Path) -> None:
    line = refusal("--redis", "redis://127.0.0.1:1/0", "--pricing", str(tmp_path / "nope.yaml"))
    assert line.startswith(f"llmquota sidecar: pricing file {tmp_path / 'nope.yaml'}: cannot read")


def test_an_unsupported_store_url_is_one_line_naming_the_schemes() -> None:
    line = refusal("--redis", "memcached://127.0.0.1:11211")
    assert line.startswith("llmquota sidecar: ")
    assert "redis://" in line
    assert "unix://" in line


def test_a_malformed_environment_variable_is_one_line() -> None:
    line = refusal(
        "--redis", "redis://127.0.0.1:1/0", environment={"LLMQUOTA_LEASE_SECONDS": "abc"}
    )
    assert (
        line == "llmquota sidecar: an LLMQUOTA_* variable: could not convert string to float: 'abc'"
    )
