"""Fixtures for the Helm chart's tests: the helm binary and the chart's folder.

helm comes from the same place as the test bed's kubectl
(``${LLMQUOTA_CACHE:-~/.cache/llmquota}/bin/helm``, filled by ``testbed/build.sh
tools``), else from PATH. A missing helm fails the tests rather than skipping them, so
that a CI run without it is never green by accident.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def _cache_dir() -> Path:
    configured = os.environ.get("LLMQUOTA_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "llmquota"


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """The helm executable: the cached one, else the one on PATH."""
    cached = _cache_dir() / "bin" / "helm"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("helm")
    if on_path is not None:
        return Path(on_path)
    pytest.fail(
        f"helm not found: neither {cached} nor `helm` on PATH. "
        "Install it with `bash testbed/build.sh tools` (or `make testbed`).",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    """The chart under test, in the checkout."""
    return REPO_ROOT / "charts" / "llmquota"
