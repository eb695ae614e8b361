"""`llmquota demo`: the first five minutes, on one machine, with nothing but this package.

Starts a real redis-server (embedded), the fake OpenAI upstream and the sidecar in
standalone mode on manifests written to a temporary folder, then uses the official
`openai` client to show, step by step: a request served, the budget-exceeded error, a
rate limit, and a budget reset at its window boundary. Exits cleanly, stopping all it
started.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from llmquota.store import EmbeddedRedis

try:
    import openai
except ImportError as missing:  # pragma: no cover - depends on the install
    msg = "the demo uses the openai client: pip install 'llmquota[demo]'"
    raise SystemExit(msg) from missing

__all__ = ["add_arguments", "run"]

DEMO_MANIFESTS = """\
apiVersion: llmquota.dev/v1alpha1
kind: Team
metadata: {name: qa-prod-bot}
spec:
  alias: QA Prod Bot
  budget: {maxBudget: 0.000000001, budgetDuration: 1d}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: qa-bot}
spec: {team: qa-prod-bot, secretName: qa-bot-key}
---
apiVersion: v1
kind: Secret
metadata: {name: qa-bot-key}
stringData: {key: sk-demo-qa-bot-0000000000000000000000}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: chatty}
spec:
  rateLimit: {rpm: 2}
  secretName: chatty-key
---
apiVersion: v1
kind: Secret
metadata: {name: chatty-key}
stringData: {key: sk-demo-chatty-00000000000000000000000}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {name: short-window}
spec:
  budget: {maxBudget: 0.000000001, budgetDuration: 3s}
  secretName: short-window-key
---
apiVersion: v1
kind: Secret
metadata: {name: short-window-key}
stringData: {key: sk-demo-short-window-000000000000000000}
"""

MODEL = "gpt-4o-mini"
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until(ready: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            msg = f"{what} not ready after {timeout_s:.0f}s"
            raise TimeoutError(msg)
        time.sleep(0.05)


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 (loopback)
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return check


@contextlib.contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _say(step: str, detail: str = "") -> None:
    print(f"\n==> {step}")
    if detail:
        print(textwrap.indent(detail, "    "))


def _client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def _chat(client: openai.OpenAI) -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    usage = reply.usage
    tokens = f"{usage.prompt_tokens} in / {usage.completion_tokens} out" if usage else "no usage"
    return f"{reply.choices[0].message.content!r} ({tokens})"


def _refusal(client: openai.OpenAI) -> str:
    try:
        _chat(client)
    except openai.APIStatusError as error:
        retry_after = error.response.headers.get("retry-after")
        wait = f", Retry-After: {retry_after}s" if retry_after else ""
        return f"HTTP {error.status_code}{wait}\n{error.message}"
    msg = "expected a refusal, the request was served"
    raise AssertionError(msg)


def _scenario(base_url: str) -> None:
    qa_bot = _client(base_url, "sk-demo-qa-bot-0000000000000000000000")
    _say("1. A request within the team's budget is served", _chat(qa_bot))
    _say(
        "2. Team qa-prod-bot's budget ($0.000000001 a day) is now used up",
        _refusal(qa_bot),
    )
    chatty = _client(base_url, "sk-demo-chatty-00000000000000000000000")
    served = [_chat(chatty) for _ in range(2)]
    _say(
        "3. Key chatty may send 2 requests a minute; the third is rate limited",
        "\n".join([*(f"served: {reply}" for reply in served), _refusal(chatty)]),
    )
    short = _client(base_url, "sk-demo-short-window-000000000000000000")
    first = _chat(short)
    refused = _refusal(short)
    started = time.monotonic()

    def admitted_again() -> bool:
        try:
            _chat(short)
        except openai.APIStatusError:
            return False
        return True

    _wait_until(admitted_again, "the 3s budget window", timeout_s=10)
    _say(
        "4. Key short-window has a 3s budget window: used up, then reset at the boundary",
        f"served: {first}\nrefused: {refused}\n"
        f"served again {time.monotonic() - started:.1f}s later, in the next window",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`llmquota demo` takes no required arguments."""
    parser.add_argument(
        "--keep-logs", action="store_true", help="print where the processes' logs are kept"
    )


def run(args: argparse.Namespace) -> int:
    """Start everything, walk through the scenario, stop everything."""
    llmquota = [sys.executable, "-m", "llmquota.cli"]
    upstream_port, sidecar_port = _free_port(), _free_port()
    folder = Path(tempfile.mkdtemp(prefix="llmquota-demo-"))
    try:
        manifests = folder / "manifests"
        manifests.mkdir()
        (manifests / "demo.yaml").write_text(DEMO_MANIFESTS)
        (folder / "upstream-key").write_text("sk-upstream-demo-credential\n")
        _say("Starting redis-server, the fake OpenAI upstream and the llmquota sidecar")
        with (
            EmbeddedRedis(folder / "redis") as redis_server,
            _process(
                [*llmquota, "fake-upstream", "--listen", f"127.0.0.1:{upstream_port}"],
                folder / "fake-upstream.log",
            ),
            _process(
                [
                    *llmquota, "sidecar",
                    "--listen", f"127.0.0.1:{sidecar_port}",
                    "--upstream", f"http://127.0.0.1:{upstream_port}",
                    "--upstream-key-file", str(folder / "upstream-key"),
                    "--redis", redis_server.url,
                    "--manifests", str(manifests),
                ],
                folder / "sidecar.log",
            ),
        ):  # fmt: skip
            _wait_until(
                _answers(f"http://127.0.0.1:{upstream_port}/v1/models"), "fake upstream", 30
            )
            _wait_until(
                _answers(f"http://127.0.0.1:{sidecar_port}/readyz"), "sidecar", START_TIMEOUT_S
            )
            _scenario(f"http://127.0.0.1:{sidecar_port}/v1")
        _say("Done: stopped the sidecar, the fake upstream and redis-server.")
    finally:
        if args.keep_logs:
            _say("Logs kept in", str(folder))
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0
