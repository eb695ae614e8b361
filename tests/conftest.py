"""Session-wide pytest plugins: real servers the integration tests run against."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.support.redis_fixtures",
    "tests.support.kube_fixtures",
    "tests.support.cluster_fixtures",
]


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Standalone sidecars the tests start keep their spend snapshots here, not in ~."""
    home = tmp_path_factory.mktemp("state-home")
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(home)
    yield home
    if previous is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = previous
