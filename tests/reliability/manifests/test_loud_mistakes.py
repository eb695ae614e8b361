"""A mistake in a standalone folder is loud, never a silent 401.

The real `llmquota sidecar` refuses to start on a bad folder, naming file, object and
field; a later edit that breaks a good folder turns /readyz 503 with the reason while the
last good policies keep serving; `llmquota check` prints the same problems and fails.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from tests.e2e.sidecar.processes import LLMQUOTA, answers, free_port, team_and_key
from tests.reliability.harness import wait_until
from tests.reliability.rig import CrashableRedis, Rig
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.e2e

EXIT_TIMEOUT_S = 60.0

TIER = """
apiVersion: llmquota.dev/v1alpha1
kind: Budget
metadata: {{name: tier}}
spec: {spec}
"""


@dataclass(frozen=True)
class BadFolder:
    """Files of a folder with one mistake, extra sidecar flags, and the line naming it."""

    id: str
    files: dict[str, str]
    named: str
    flags: tuple[str, ...] = ()

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (directory / name).write_text(text)
        return directory


GOOD_KEY = team_and_key(
    "loud", "loud-bot", "sk-loud-bot-0001", key_fields="budgetRef: {name: tier}"
)
BAD_FOLDERS = [
    BadFolder(
        "unknown-field",
        {"key.yaml": GOOD_KEY, "tier.yaml": TIER.format(spec="{maxBudget: 1, maxBudgett: 50}")},
        "tier.yaml Budget default/tier: spec.maxBudgett: Extra inputs are not permitted",
    ),
    BadFolder(
        "bad-duration",
        {"key.yaml": GOOD_KEY, "tier.yaml": TIER.format(spec="{maxBudget: 1, budgetDuration: 1y}")},
        "tier.yaml Budget default/tier: spec.budgetDuration: budgetDuration '1y' is not",
    ),
    BadFolder(
        "models-outside-team",
        {
            "key.yaml": team_and_key(
                "loud",
                "loud-bot",
                "sk-loud-bot-0001",
                team_spec="{models: [gpt-4o-mini]}",
                key_fields="models: [gpt-4o]",
            )
        },
        "key.yaml#2 ApiKey default/loud-bot: spec.models: gpt-4o not among team loud's models",
    ),
    BadFolder(
        "dangling-reference",
        {"key.yaml": GOOD_KEY},
        "key.yaml#2 ApiKey default/loud-bot: spec.budgetRef: Budget 'tier' not found",
    ),
    BadFolder(
        "misspelled-global-budget",
        {"key.yaml": GOOD_KEY, "tier.yaml": TIER.format(spec="{maxBudget: 1}")},
        "--global-budget Budget default/tierr: metadata.name: no such Budget in the manifests",
        ("--global-budget", "default/tierr"),
    ),
]


def bad_params() -> list[object]:
    return [pytest.param(folder, id=folder.id) for folder in BAD_FOLDERS]


def readyz(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest.mark.parametrize("folder", bad_params())
def test_the_sidecar_refuses_to_start_naming_file_object_and_field(
    folder: BadFolder, tmp_path: Path, crashable_redis: CrashableRedis
) -> None:
    manifests = folder.write(tmp_path / "manifests")
    port = free_port()
    log = tmp_path / "sidecar.log"
    with log.open("wb") as output:
        sidecar = subprocess.Popen(
            [*LLMQUOTA, "sidecar", "--listen", f"127.0.0.1:{port}", "--redis",
             crashable_redis.url, "--manifests", str(manifests), *folder.flags],
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def exited_never_ready() -> bool:
        assert not answers(f"http://127.0.0.1:{port}/readyz"), "ready on a bad folder"
        return sidecar.poll() is not None

    try:
        wait_until_sync(exited_never_ready, EXIT_TIMEOUT_S, poll_s=0.1, what="the sidecar exited")
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
        sidecar.wait()
    text = log.read_text()
    assert sidecar.returncode == 2, text
    assert f"llmquota sidecar: --manifests {manifests}: {folder.named}" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("folder", bad_params())
def test_llmquota_check_prints_one_line_per_problem_and_fails(
    folder: BadFolder, tmp_path: Path
) -> None:
    manifests = folder.write(tmp_path / "manifests")
    checked = subprocess.run(
        [*LLMQUOTA, "check", "--manifests", str(manifests), *folder.flags],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )
    assert checked.returncode == 1, checked
    lines = checked.stdout.splitlines()
    assert any(line.startswith(folder.named) for line in lines), lines
    # Nothing else but what follows from it (the key that refers to a broken Budget).
    assert all(
        line == lines[0] or "is invalid (its own problem is listed)" in line for line in lines[1:]
    ), lines


def test_llmquota_check_passes_a_good_folder(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "key.yaml").write_text(GOOD_KEY)
    (manifests / "tier.yaml").write_text(TIER.format(spec="{maxBudget: 1, budgetDuration: 1w}"))
    checked = subprocess.run(
        [*LLMQUOTA, "check", "--manifests", str(manifests)],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )
    assert (checked.returncode, checked.stdout) == (0, f"{manifests}: ok, 1 key(s)\n")


def ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )


async def test_an_edit_that_breaks_the_folder_turns_not_ready_and_keeps_the_last_good(
    rig: Rig,
) -> None:
    await rig.apply(GOOD_KEY + "---\n" + TIER.format(spec="{maxBudget: 1}"))
    sidecar = rig.start_sidecar()
    client = rig.client(sidecar, "sk-loud-bot-0001")
    await asyncio.to_thread(ask, client)

    newcomer = team_and_key("late", "late-bot", "sk-late-bot-0001")
    broken = TIER.format(spec="{maxBudget: 1, budgetDuration: 1y}")
    (rig.manifests / "test.yaml").write_text(GOOD_KEY + "---\n" + broken + "---\n" + newcomer)

    async def not_ready() -> bool:
        return (await asyncio.to_thread(readyz, sidecar.url))[0] == 503

    await wait_until(not_ready, timeout_s=10)
    _, body = await asyncio.to_thread(readyz, sidecar.url)
    assert body["problems"] == [
        "manifest problem (last good policies kept): test.yaml#4 Budget default/tier: "
        "spec.budgetDuration: budgetDuration '1y' is not <int>s|m|h|d|w (e.g. 30s, 10m, 1h, "
        "30d, 1w), daily, weekly, monthly (or 1mo), quarterly or yearly",
        "manifest problem (last good policies kept): test.yaml#2 ApiKey default/loud-bot: "
        "spec.budgetRef: Budget default/tier is invalid (its own problem is listed)",
    ]
    await asyncio.to_thread(ask, client)  # the last good policies still serve
    with pytest.raises(openai.AuthenticationError):  # the broken folder was not half-applied
        await asyncio.to_thread(ask, rig.client(sidecar, "sk-late-bot-0001"))

    fixed = TIER.format(spec="{maxBudget: 1, budgetDuration: 1w}")
    (rig.manifests / "test.yaml").write_text(GOOD_KEY + "---\n" + fixed + "---\n" + newcomer)

    async def ready() -> bool:
        return (await asyncio.to_thread(readyz, sidecar.url))[0] == 200

    await wait_until(ready, timeout_s=10)
    await asyncio.to_thread(ask, rig.client(sidecar, "sk-late-bot-0001"))
