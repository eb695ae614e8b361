"""A sidecar in front of a hostile upstream, and clients that send what bloats: memory
stays bounded per request (measured as the sidecar process's peak RSS), the upstream's
credential never comes back to the client, and only allowed client headers go on (#17).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import redis
from tests.e2e.sidecar.processes import LLMQUOTA, Process, free_port, start
from tests.reliability.harness import policies_from_yaml
from tests.reliability.sidecar.hostile_upstream import CREDENTIAL, HostileUpstream, hostile_upstream
from tests.reliability.sidecar.raw_http import build_request, exchange

from llmquota.policy import keyspace
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.e2e

KEY = "sk-hostile-upstream-0001"
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: bloat}}
spec: {{budget: {{maxBudget: 1000}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bloat}}
stringData: {{key: {KEY}}}
"""
MIB = 1024 * 1024
# What a request may add to the sidecar's peak RSS; before #17 each case below added
# several times its size (a 64 MiB answer: about 130 MiB).
BOUND_MIB = 32
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Bed:
    sidecar: Process
    upstream: HostileUpstream
    redis: redis.Redis

    @property
    def port(self) -> int:
        return int(self.sidecar.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.sidecar.popen.pid

    def spend(self) -> tuple[int, int]:
        (policy,) = policies_from_yaml(MANIFESTS).values()
        (scope,) = policy.scopes
        spend, reserved = self.redis.hmget(
            keyspace.budget_key(scope.tag, scope.id), ["spend", "resv"]
        )
        return int(spend or 0), int(reserved or 0)


def sidecar_args(upstream_url: str, directory: Path, redis_url: str, port: int) -> list[str]:
    key_file = directory / "upstream-key"
    key_file.write_text(CREDENTIAL + "\n")
    return [
        "sidecar", "--listen", f"127.0.0.1:{port}", "--upstream", upstream_url,
        "--upstream-key-file", str(key_file), "--redis", redis_url,
        "--manifests", str(directory / "manifests"), "--forward-header", "x-hostile",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    directory = tmp_path_factory.mktemp("hostile-upstream")
    (directory / "manifests").mkdir()
    (directory / "manifests" / "keys.yaml").write_text(MANIFESTS)
    with hostile_upstream() as upstream, EmbeddedRedis() as store:
        port = free_port()
        args = sidecar_args(upstream.url, directory, store.url, port)
        sidecar = start(args, directory / "sidecar.log", f"http://127.0.0.1:{port}", "/readyz")
        client = redis.Redis.from_url(store.url)
        bed = Bed(sidecar, upstream, client)
        # Loaded once, on the first request, not per request: the tokenizer's tables.
        assert post(bed, json.dumps(CHAT).encode()).status == 200
        try:
            yield bed
        finally:
            sidecar.stop()
            client.close()


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def peak_growth_mib(bed: Bed, send: object) -> float:
    """How far above its RSS before the request the sidecar's peak RSS went during it."""
    Path(f"/proc/{bed.pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status(bed.pid, "VmRSS")
    assert callable(send)
    send()
    return (_status(bed.pid, "VmHWM") - before) / MIB


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    size: int
    tail: bytes  # the last 4 kB, or the whole of a small answer


def post(bed: Bed, body: bytes, *headers: tuple[str, str]) -> Answer:
    """POST a chat completion and read the answer to its end (or its cut)."""
    connection = http.client.HTTPConnection("127.0.0.1", bed.port, timeout=60)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            body,
            {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **dict(headers)},
        )
        response = connection.getresponse()
        tail, size = b"", 0
        try:
            while chunk := response.read1(MIB):
                size += len(chunk)
                tail = (tail + chunk)[-4096:]
        except (http.client.IncompleteRead, ValueError, ConnectionError):
            pass  # cut off by the sidecar: what came before is the answer
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, size, tail)
    finally:
        connection.close()


def test_a_huge_whole_answer_is_streamed_through_and_charged_its_usage(bed: Bed) -> None:
    megabytes = 64
    received: list[Answer] = []

    def send() -> None:
        received.append(
            post(bed, json.dumps(CHAT).encode(), ("x-hostile", f"huge-whole:{megabytes}"))
        )

    spend_before, _ = bed.spend()
    growth = peak_growth_mib(bed, send)
    (answer,) = received
    assert answer.status == 200
    assert answer.size > megabytes * MIB
    assert answer.tail.endswith(b'"total_tokens": 21}}')
    # Past the buffer the answer is not held for its cost: those two headers are omitted.
    assert "x-llmquota-response-cost" not in answer.headers
    assert "x-llmquota-budget-remaining" not in answer.headers
    spend, reserved = bed.spend()
    assert reserved == 0
    assert spend - spend_before == round((9 * 0.15 + 12 * 0.6) * 1000)  # usage x price, nano-USD
    assert growth < BOUND_MIB, f"peak RSS grew {growth:.0f} MiB"


def test_an_event_without_end_is_an_error_to_the_client_not_a_buffer(bed: Bed) -> None:
    received: list[Answer] = []

    def send() -> None:
        body = json.dumps({**CHAT, "stream": True}).encode()
        received.append(post(bed, body, ("x-hostile", "endless-event:24")))

    growth = peak_growth_mib(bed, send)
    (answer,) = received
    assert answer.size < 2 * MIB  # nothing of the over-long event was passed on
    event = json.loads(answer.tail.strip().removeprefix(b"data: "))
    assert event["error"]["code"] == "upstream_event_too_long"
    assert growth < BOUND_MIB, f"peak RSS grew {growth:.0f} MiB"
    assert bed.spend()[1] == 0


def gzip_bomb(decoded_mib: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * MIB
    return b"".join(packer.compress(zeros) for _ in range(decoded_mib)) + packer.flush()


def test_a_compressed_body_past_the_limit_is_413_without_inflating_it(bed: Bed) -> None:
    bomb = gzip_bomb(1024)
    assert len(bomb) < 2 * MIB  # well inside --max-body-bytes as sent
    answers = []

    def send() -> None:
        answers.append(
            exchange(
                bed.port,
                build_request(
                    "POST",
                    b"/v1/chat/completions",
                    [(b"Authorization", b"Bearer " + KEY.encode()), (b"Content-Encoding", b"gzip")],
                    bomb,
                ),
                timeout_s=60,
            )
        )

    growth = peak_growth_mib(bed, send)
    (answer,) = answers
    assert answer.status == 413, answer
    assert json.loads(answer.body)["error"]["code"] == "request_too_large"
    assert growth < BOUND_MIB, f"peak RSS grew {growth:.0f} MiB"


def test_an_upstream_error_never_shows_the_upstream_credential(bed: Bed) -> None:
    answer = post(bed, json.dumps(CHAT).encode(), ("x-hostile", "echo-credential"))
    head = "\n".join(f"{name}: {value}" for name, value in answer.headers.items())
    assert answer.status == 401
    assert "Incorrect API key provided" in json.loads(answer.tail)["error"]["message"]
    for shown in (answer.tail.decode(), head):
        assert CREDENTIAL not in shown
        assert f"{CREDENTIAL[:3]}...{CREDENTIAL[-4:]}" not in shown
        assert f"****{CREDENTIAL[-4:]}" not in shown
    assert bed.spend()[1] == 0


def test_only_allowed_client_headers_reach_the_upstream(bed: Bed) -> None:
    client = openai.OpenAI(
        base_url=f"{bed.sidecar.url}/v1",
        api_key=KEY,
        max_retries=0,
        organization="org-someone-elses",
        project="proj-someone-elses",
        default_headers={
            "Forwarded": "for=203.0.113.9",
            "X-Forwarded-For": "203.0.113.9",
            "X-Internal-Token": "secret",
        },
    )
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        client.close()
    seen = {name.lower(): value for name, value in bed.upstream.seen_headers[-1].items()}
    for withheld in ("openai-organization", "openai-project", "forwarded", "x-forwarded-for",
                     "x-internal-token"):  # fmt: skip
        assert withheld not in seen, seen
    assert seen["authorization"] == f"Bearer {CREDENTIAL}"
    assert seen["x-stainless-lang"] == "python"
    assert seen["content-type"] == "application/json"


def test_an_upstream_url_with_userinfo_is_refused_at_start_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    args = sidecar_args(
        "http://user:pass@127.0.0.1:9", tmp_path, "redis://127.0.0.1:9", free_port()
    )
    finished = subprocess.run([*LLMQUOTA, *args], capture_output=True, timeout=60, check=False)
    assert finished.returncode != 0
    lines = finished.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "--upstream must not carry user:password@" in lines[0]
