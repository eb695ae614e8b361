"""Every folder of examples/ on a laptop: `llmquota sidecar --manifests examples/<folder>`
(embedded Redis, as the README says) in front of the fake upstream, then the README's
requests through the official client, and what the README says one sees."""

from __future__ import annotations

import inspect

import openai
import pytest
from tests.e2e.examples.conftest import EXAMPLES_DIR, StartSidecar, clients_of
from tests.e2e.examples.promises import EXAMPLES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_every_example_folder_has_its_promises_checked() -> None:
    folders = {path.name for path in EXAMPLES_DIR.iterdir() if path.is_dir()}
    assert folders == set(EXAMPLES)


@pytest.mark.parametrize("folder", sorted(EXAMPLES))
async def test_example_standalone(
    folder: str, start_sidecar: StartSidecar, opened_clients: list[openai.OpenAI]
) -> None:
    sidecar = start_sidecar("--manifests", str(EXAMPLES_DIR / folder))
    checked = EXAMPLES[folder].check(clients_of(sidecar, opened_clients))
    if inspect.isawaitable(checked):
        await checked
