"""Two sidecar processes on one Redis enforce one budget together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tests.e2e.sidecar.processes import (
    ClientFactory,
    Process,
    Sidecar,
    start_sidecar,
    team_and_key,
)

from llmquota.store import EmbeddedRedis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
# Room for a few requests of gpt-4o-mini with max_tokens 16 (about 1e-5 USD reserved each).
BUDGET = "{budget: {maxBudget: 0.00005, budgetDuration: 1d}}"


@pytest.fixture(scope="module")
def second_sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    sidecar: Sidecar,
    sidecar_redis: EmbeddedRedis,
    fake_upstream: Process,
) -> Iterator[Process]:
    """Another sidecar process on the same Redis and the same manifests directory."""
    directory: Path = tmp_path_factory.mktemp("second-sidecar")
    process = start_sidecar(directory, sidecar.manifests, sidecar_redis.url, fake_upstream)
    yield process
    process.stop()


def served_until_refused(clients: list[openai.OpenAI]) -> int:
    """Send requests round-robin over `clients` until one gets 402; how many were served."""
    for served in range(100):
        try:
            clients[served % len(clients)].chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=16
            )
        except openai.APIStatusError as refused:
            status = refused.status_code
            break
    else:
        raise AssertionError("never refused")
    assert status == 402
    return served


def test_two_sidecars_share_one_budget(
    sidecar: Sidecar, second_sidecar: Process, clients: ClientFactory
) -> None:
    alone, together = "sk-shared-alone", "sk-shared-together"
    sidecar.apply(
        "shared",
        team_and_key("shared-alone", "shared-alone", alone, team_spec=BUDGET)
        + "---\n"
        + team_and_key("shared-together", "shared-together", together, team_spec=BUDGET),
        alone,
        together,
    )
    limit = served_until_refused([clients(alone)])
    assert limit >= 2
    both = [clients(together), clients(together, second_sidecar.url)]
    assert served_until_refused(both) == limit
    # Once spent, either sidecar refuses.
    assert served_until_refused(both[::-1]) == 0
