"""Processes for the examples' tests: the fake upstream (one per session) and a sidecar
per example, started the way examples/README.md tells a user to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from tests.e2e.examples.promises import PodIdentity, Reach
from tests.e2e.sidecar.processes import Process, free_port, start

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
StartSidecar = Callable[..., Process]
"""`start_sidecar(*flags)`: `llmquota sidecar` on a free port with these flags."""


@pytest.fixture(scope="session")
def fake_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    port = free_port()
    log = tmp_path_factory.mktemp("fake") / "fake-upstream.log"
    process = start(
        ["fake-upstream", "--listen", f"127.0.0.1:{port}"],
        log,
        f"http://127.0.0.1:{port}",
        "/_fake/requests",
    )
    yield process
    process.stop()


@pytest.fixture
def start_sidecar(fake_upstream: Process, tmp_path: Path) -> Iterator[StartSidecar]:
    started: list[Process] = []

    def start_one(*flags: str) -> Process:
        port = free_port()
        # The spend snapshot goes in the test's own folder, not in examples/, where it
        # would carry one run's spend into the next.
        state = ["--state-file", str(tmp_path / f"state-{len(started)}.json")]
        process = start(
            [
                "sidecar",
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                fake_upstream.url,
                *state,
                *flags,
            ],
            tmp_path / f"sidecar-{len(started)}.log",
            f"http://127.0.0.1:{port}",
            "/readyz",
        )
        started.append(process)
        return process

    yield start_one
    for process in started:
        process.stop()


def identity_flags(folder: str, pod: PodIdentity | None, namespace: str, into: Path) -> list[str]:
    """The sidecar flags the webhook would set for the example's Pod, in `namespace`:
    its `pod/` folder copied with that namespace written in."""
    if pod is None:
        return []
    identity = into / "identity"
    identity.mkdir()
    (identity / "labels").write_text((EXAMPLES_DIR / folder / pod.folder / "labels").read_text())
    (identity / "namespace").write_text(namespace)
    return ["--identity-dir", str(identity), "--workload", pod.workload]


def clients_of(sidecar: Process, made: list[openai.OpenAI]) -> Reach:
    """Official clients for `sidecar`, remembered in `made` to be closed."""

    def reach(key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=key, max_retries=0)
        made.append(client)
        return client

    return reach


@pytest.fixture
def opened_clients() -> Iterator[list[openai.OpenAI]]:
    made: list[openai.OpenAI] = []
    yield made
    for client in made:
        client.close()
