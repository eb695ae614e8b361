"""Every folder of examples/ on a laptop: `llmquota sidecar --manifests examples/<folder>`
(embedded Redis, as the README says) in front of the fake upstream, then the README's
requests through the official client, and what the README says one sees."""

from __future__ import annotations

import inspect
from pathlib import Path

import openai
import pytest
import yaml
from tests.e2e.examples.conftest import EXAMPLES_DIR, StartSidecar, clients_of, identity_flags
from tests.e2e.examples.promises import EXAMPLES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_every_example_folder_has_its_promises_checked() -> None:
    folders = {path.name for path in EXAMPLES_DIR.iterdir() if path.is_dir()}
    assert folders == set(EXAMPLES)


@pytest.mark.parametrize("folder", sorted(EXAMPLES))
async def test_example_standalone(
    folder: str, start_sidecar: StartSidecar, opened_clients: list[openai.OpenAI], tmp_path: Path
) -> None:
    pod = identity_flags(folder, EXAMPLES[folder].pod, "default", tmp_path)
    sidecar = start_sidecar("--manifests", str(EXAMPLES_DIR / folder), *pod)
    checked = EXAMPLES[folder].check(clients_of(sidecar, opened_clients))
    if inspect.isawaitable(checked):
        await checked


@pytest.mark.parametrize("folder", sorted(EXAMPLES))
def test_secrets_come_before_the_keys_that_name_them(folder: str) -> None:
    """`kubectl apply -f <folder>/` creates in file order (files sorted by name); an
    ApiKey created before its Secret races the operator, which generates one for it."""
    documents = [
        document
        for path in sorted((EXAMPLES_DIR / folder).glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    ]
    for index, document in enumerate(documents):
        if document["kind"] == "ApiKey":
            secret = document["spec"]["secretName"]
            earlier = [(d["kind"], d["metadata"]["name"]) for d in documents[:index]]
            assert ("Secret", secret) in earlier, f"Secret {secret} after its ApiKey"
