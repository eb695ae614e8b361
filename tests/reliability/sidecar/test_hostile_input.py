"""Hostile input to a running sidecar over raw HTTP: wrong types, odd unicode, huge and
endless bodies, injected headers, strange paths, slow clients. Whatever arrives, the
sidecar answers with a 4xx of its own (or passes a request on), never a 500, never
crashes, and never charges a key other than the one presented."""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.e2e.sidecar.processes import Process, start_sidecar
from tests.reliability.harness import policies_from_yaml
from tests.reliability.rig import UPSTREAM_KEY, Rig
from tests.reliability.sidecar.raw_http import RawResponse, build_request, exchange
from tests.support.waiting import wait_until_sync

from llmquota.policy import keyspace
from llmquota.policy.limits import ResolvedPolicy
from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.e2e

KEY = "sk-hostile-fuzz-0001"
VICTIM_KEY = "sk-hostile-victim-0002"
MAX_BODY = 65536
BODY_TIMEOUT_S = 2
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: fuzz}}
spec: {{budget: {{maxBudget: 1000}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: fuzz}}
stringData: {{key: {KEY}}}
---
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: victim}}
spec: {{budget: {{maxBudget: 1000}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: victim}}
stringData: {{key: {VICTIM_KEY}}}
"""
ENDPOINTS = [b"/v1/chat/completions", b"/chat/completions", b"/v1/completions",
             b"/v1/embeddings", b"/v1/responses"]  # fmt: skip
FUZZ_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass
class Target:
    """The sidecar under attack, its Redis and the upstream behind it."""

    sidecar: Process
    redis: redis.Redis
    upstream: Process
    policies: dict[str, ResolvedPolicy]

    @property
    def port(self) -> int:
        return int(self.sidecar.url.rsplit(":", 1)[1])

    def send(self, raw: bytes) -> RawResponse:
        answer = exchange(self.port, raw)
        assert self.sidecar.popen.poll() is None, self.sidecar.log_text()[-3000:]
        return answer

    def post(self, path: bytes, body: bytes, *headers: tuple[bytes, bytes]) -> RawResponse:
        auth = (b"Authorization", b"Bearer " + KEY.encode())
        json_type = (b"Content-Type", b"application/json")
        return self.send(build_request("POST", path, [auth, json_type, *headers], body))

    def spend(self, name: str) -> int:
        scope = next(scope for scope in self.policies[name].scopes if scope.kind == "key")
        return int(self.redis.hget(keyspace.budget_key(scope.tag, scope.id), "spend") or 0)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, upstream: Process) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("hostile")
    manifests = directory / "manifests"
    manifests.mkdir()
    (manifests / "keys.yaml").write_text(MANIFESTS)
    policies = policies_from_yaml(MANIFESTS)
    with EmbeddedRedis() as store_server:
        client = redis.Redis.from_url(store_server.url)
        sidecar = start_sidecar(
            directory, manifests, store_server.url, upstream,
            "--max-body-bytes", str(MAX_BODY), "--upstream-timeout", "5",
            "--body-timeout", str(BODY_TIMEOUT_S),
        )  # fmt: skip
        wait_until_sync(
            lambda: all(client.exists(keyspace.policy_key(p.key_hash)) for p in policies.values()),
            15,
            what="policies written",
        )
        yield Target(sidecar, client, upstream, policies)
        sidecar.stop()
        client.close()


def assert_sidecar_kept_its_head(answer: RawResponse) -> None:
    """A hostile request gets an answer below 500; an error of its own is OpenAI-shaped."""
    assert answer.status != 0, "closed without an answer"
    assert answer.status < 500, (answer.status, answer.body[:500])
    if answer.status >= 400 and b"application/json" in answer.head.lower():
        assert "error" in json.loads(answer.body)


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    # A lone surrogate as a model name has a test of its own (below).
    st.sampled_from(["\u202e", "\x00", "🦙" * 5, "gpt-4o-mini\r\nX-Evil: 1"]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)
MESSAGES = st.one_of(
    st.just([{"role": "user", "content": "hi"}]),
    st.lists(st.fixed_dictionaries({"role": JSON_LEAVES, "content": JSON_VALUES}), max_size=3),
    JSON_VALUES,
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.just("gpt-4o-mini"), JSON_LEAVES, JSON_VALUES),
        "messages": MESSAGES,
        "input": JSON_VALUES,
        "prompt": JSON_VALUES,
        "stream": st.one_of(st.booleans(), JSON_LEAVES),
        "stream_options": JSON_VALUES,
        "max_tokens": st.one_of(st.integers(min_value=-(10**20), max_value=10**20), JSON_LEAVES),
        "max_completion_tokens": JSON_LEAVES,
        "n": JSON_LEAVES,
        "user": JSON_VALUES,
    },
)


@FUZZ_SETTINGS
@given(path=st.sampled_from(ENDPOINTS), body=BODIES)
def test_fuzzed_json_bodies_get_an_answer_below_500(
    target: Target, path: bytes, body: dict[str, Any]
) -> None:
    victim_before = target.spend("victim")
    answer = target.post(path, json.dumps(body).encode())
    assert_sidecar_kept_its_head(answer)
    assert target.spend("victim") == victim_before


@FUZZ_SETTINGS
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode)))
def test_bodies_that_are_not_json_get_400(target: Target, raw: bytes) -> None:
    answer = target.post(b"/v1/chat/completions", raw)
    try:
        parsed = json.loads(raw)
    except ValueError:
        assert answer.status == 400, answer
        assert json.loads(answer.body)["error"]["type"] == "invalid_request_error"
    else:
        assert_sidecar_kept_its_head(answer) if isinstance(parsed, dict) else None


@pytest.mark.parametrize(
    "model",
    [pytest.param(42, id="number"), pytest.param(None, id="null"),
     pytest.param(["gpt-4o"], id="list"), pytest.param("", id="empty")],
)  # fmt: skip
def test_a_model_that_is_not_a_name_is_400(target: Target, model: Any) -> None:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    answer = target.post(b"/v1/chat/completions", body.encode())
    assert answer.status == 400, answer
    assert json.loads(answer.body)["error"]["param"] == "model"


@pytest.mark.parametrize("messages", ["hi", 7, [None], {"role": "user"}])
def test_messages_of_the_wrong_type_are_refused_or_left_to_the_upstream(
    target: Target, messages: Any
) -> None:
    # The sidecar needs only the model; the upstream judges the rest (a real one: 400,
    # which costs nothing). The fake upstream is lenient and may answer 200.
    body = json.dumps({"model": "gpt-4o-mini", "messages": messages})
    assert_sidecar_kept_its_head(target.post(b"/v1/chat/completions", body.encode()))


def test_a_body_over_the_limit_is_413(target: Target) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [], "pad": "x" * MAX_BODY}).encode()
    assert target.post(b"/v1/chat/completions", body).status == 413


def test_a_lying_content_length_is_413_without_waiting_for_the_body(target: Target) -> None:
    raw = build_request(
        "POST",
        b"/v1/chat/completions",
        [(b"Authorization", b"Bearer " + KEY.encode())],
        b"{}",
        content_length=10**12,
    )
    answer = exchange(target.port, raw, timeout_s=3)
    assert answer.status == 413


def test_a_body_that_stops_coming_is_408_and_the_connection_closed(target: Target) -> None:
    raw = build_request(
        "POST",
        b"/v1/chat/completions",
        [(b"Authorization", b"Bearer " + KEY.encode())],
        b'{"model": "gpt-4o-mini"',
        content_length=1000,
    )
    started = time.monotonic()
    # `exchange` reads until the server closes: a held connection is a TimeoutError here.
    answer = exchange(target.port, raw, timeout_s=BODY_TIMEOUT_S + 3)
    assert answer.status == 408
    assert json.loads(answer.body)["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < BODY_TIMEOUT_S + 2


HEADER_ATTACKS = [
    pytest.param([(b"Authorization", b"Bearer " + KEY.encode() + b"\r\nX-Evil: 1")], id="crlf"),
    pytest.param([(b"Authorization", b"Bearer " + KEY.encode() + b"\nX-Evil: 1")], id="bare-lf"),
    pytest.param([(b"Authorization", b"Bearer " + KEY.encode() + b"\x00")], id="nul"),
    pytest.param([(b"Authorization", b"Bearer sk-hostile fuzz-0001")], id="key-with-space"),
    pytest.param([(b"Authorization", b"Bearer " + KEY.encode() + b" ")], id="trailing-space"),
    pytest.param([(b"Authorization", "Bearer sk-\u00e9\u00e8".encode())], id="latin1"),
    pytest.param([(b"Authorization", b"Bearer \xff\xfe")], id="invalid-utf8"),
    pytest.param([(b"Authorization", b"Basic " + KEY.encode())], id="wrong-scheme"),
    pytest.param([(b"Auth orization", b"Bearer " + KEY.encode())], id="space-in-name"),
    pytest.param(
        [(b"x-api-key", KEY.encode()), (b"x-api-key", VICTIM_KEY.encode())], id="two-keys"
    ),
    pytest.param([(b"Authorization", b"Bearer " + b"A" * 100_000)], id="huge-header"),
    pytest.param(
        [(b"Authorization", b"Bearer " + KEY.encode()), (b"X-Long", b"v\r\n folded")], id="obs-fold"
    ),
]


@pytest.mark.parametrize("headers", HEADER_ATTACKS)
def test_header_attacks_never_charge_another_key(
    target: Target, headers: list[tuple[bytes, bytes]]
) -> None:
    victim_before = target.spend("victim")
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    raw = build_request("POST", b"/v1/chat/completions", headers, body.encode())
    answer = target.send(raw)
    assert answer.status in {200, 400, 401, 431}, answer
    assert target.spend("victim") == victim_before


@FUZZ_SETTINGS
@given(
    path=st.one_of(
        st.sampled_from(
            [
                b"/../v1/chat/completions",
                b"//v1//chat//completions",
                b"/v1/../v1/chat/completions",
                b"/v1/chat/completions/../../_fake/requests",
                b"/%2e%2e/%2e%2e/etc/passwd",
                b"/v1/chat%2fcompletions",
                b"/v1/chat/completions?x=\xff",
                b"*",
                b"/v1/" + b"a" * 9000,
                b"/v1/chat/completions#frag",
                b"http://evil.example/v1/chat/completions",
            ]
        ),
        st.binary(min_size=1, max_size=200).map(lambda raw: b"/" + raw.replace(b" ", b"%20")),
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]),
)
def test_strange_paths_and_methods_get_an_answer_below_500(
    target: Target, path: bytes, method: str
) -> None:
    auth = (b"Authorization", b"Bearer " + KEY.encode())
    answer = target.send(build_request(method, path, [auth], b'{"model": "gpt-4o-mini"}'))
    if answer.status != 0:  # a request line that is not HTTP may just be dropped
        assert_sidecar_kept_its_head(answer)


def test_slow_clients_hold_nothing_and_block_no_one(target: Target) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    request = build_request(
        "POST", b"/v1/chat/completions", [(b"Authorization", b"Bearer " + KEY.encode())],
        body.encode(),
    )  # fmt: skip
    slow = []
    try:
        for _ in range(100):
            connection = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            connection.sendall(request[: len(request) - 5])  # all but the body's end
            slow.append(connection)
        started = time.monotonic()
        answer = target.send(request)
        assert answer.status == 200
        assert time.monotonic() - started < 5
        # Nothing is reserved for a request whose body has not arrived.
        scope = next(s for s in target.policies["fuzz"].scopes if s.kind == "key")
        assert int(target.redis.hget(keyspace.budget_key(scope.tag, scope.id), "resv") or 0) == 0
    finally:
        for connection in slow:
            connection.close()


def test_after_the_attacks_the_sidecar_serves_and_reports(target: Target) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert target.post(b"/v1/chat/completions", body.encode()).status == 200
    with urllib.request.urlopen(f"{target.sidecar.url}/metrics", timeout=5) as metrics:
        assert metrics.status == 200
    assert target.spend("victim") == 0
    with urllib.request.urlopen(f"{target.upstream.url}/_fake/requests", timeout=5) as recorded:
        requests = json.load(recorded)["requests"]
    for upstream_request in requests:
        assert upstream_request["headers"].get("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert KEY not in json.dumps(upstream_request)


async def test_a_surrogate_in_a_model_name_does_not_break_metrics(rig: Rig) -> None:
    policies = await rig.apply(MANIFESTS)
    sidecar = rig.start_sidecar()
    await rig.wait_for_policies(policies.values())
    port = int(sidecar.url.rsplit(":", 1)[1])
    body = b'{"model": "gpt-4o-mini\\ud800", "messages": [{"role": "user", "content": "hi"}]}'
    auth = (b"Authorization", b"Bearer " + KEY.encode())
    answer = exchange(port, build_request("POST", b"/v1/chat/completions", [auth], body))
    assert_refused_in_the_envelope(answer)
    assert json.loads(answer.body)["error"]["param"] == "model"
    metrics = exchange(port, build_request("GET", b"/metrics"))
    assert metrics.status == 200
    assert b"gpt-4o-mini\\ud800" not in metrics.body


def assert_refused_in_the_envelope(answer: RawResponse, status: int = 400) -> None:
    """The sidecar's own refusal: `status`, JSON, OpenAI's four error fields."""
    assert answer.status == status, (answer.status, answer.head, answer.body[:300])
    assert b"content-type: application/json" in answer.head.lower(), answer.head
    error = json.loads(answer.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    if status in {400, 413}:
        assert error["type"] == "invalid_request_error", error


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **fields}


def _deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    inner = opener * depth if opener == "[" else '{"a":' * depth
    tail = closer * depth
    return (
        '{"model": "gpt-4o-mini", "messages": ' + inner + "1" * (opener == "{") + tail + "}"
    ).encode()


def _gzip_broken(data: bytes) -> bytes:
    whole = gzip.compress(json.dumps(_chat()).encode())
    return whole[: len(whole) // 2] + data


def _with_surrogate(field: str, junk: str) -> bytes:
    return json.dumps(_chat(**{field: "id" + junk + "\ud800"})).encode()


def _huge_reservation(n: int, max_tokens: float, prompts: int) -> bytes:
    body = _chat(prompt=["tell me a story"] * prompts, n=n, max_tokens=max_tokens)
    return json.dumps(body).encode()


def _typed_part(part_type: Any) -> bytes:
    content = [{"role": "user", "content": [{"type": part_type}]}]
    return json.dumps({"model": "gpt-4o-mini", "input": content, "messages": content}).encode()


NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()
ENCODINGS = [((b"Content-Encoding", b"gzip"),), ((b"Content-Encoding", b"deflate"),)]
# Each class of input that once made the sidecar answer 500 (#17): (path, headers, body).
HOSTILE_BODIES = st.one_of(
    st.tuples(
        st.just(b"/v1/chat/completions"),
        st.just(NO_HEADERS),
        st.builds(_deep, st.integers(1000, 20_000), st.sampled_from(["[", "{"])),
    ),
    st.tuples(
        st.just(b"/v1/chat/completions"),
        st.just(NO_HEADERS),
        st.builds(_with_surrogate, st.sampled_from(["user", "model"]), st.text(max_size=5)),
    ),
    st.tuples(
        st.just(b"/v1/chat/completions"),
        st.sampled_from(ENCODINGS),
        st.one_of(st.binary(min_size=1, max_size=200), st.binary(max_size=50).map(_gzip_broken)),
    ),
    st.tuples(
        st.sampled_from([b"/v1/completions", b"/v1/chat/completions"]),
        st.just(NO_HEADERS),
        st.builds(
            _huge_reservation,
            st.integers(1, 128),
            st.sampled_from([10**7, 10**9, 10**12, 1e7, 10**18]),
            st.integers(1, 2000),
        ),
    ),
    st.tuples(
        st.sampled_from([b"/v1/chat/completions", b"/v1/responses"]),
        st.just(NO_HEADERS),
        st.builds(
            _typed_part,
            st.one_of(
                st.lists(st.text(max_size=5), max_size=3),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            ),
        ),
    ),
)


@FUZZ_SETTINGS
@given(case=HOSTILE_BODIES)
def test_hostile_bodies_never_get_a_500_of_the_sidecars_own(
    target: Target, case: tuple[bytes, tuple[tuple[bytes, bytes], ...], bytes]
) -> None:
    path, headers, body = case
    logged_before = len(target.sidecar.log_text())
    answer = target.post(path, body, *headers)
    assert_sidecar_kept_its_head(answer)
    new_lines = target.sidecar.log_text()[logged_before:]
    assert '"level":"error"' not in new_lines, new_lines[-2000:]
    assert "Traceback" not in new_lines, new_lines[-2000:]
    if answer.status >= 400 and b"x-request-id" in answer.head.lower():
        assert b"content-type: application/json" in answer.head.lower(), answer.head
        error = json.loads(answer.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(_deep(5000, "["), None, id="nested-5000-deep"),
        pytest.param(_with_surrogate("user", ""), "user", id="surrogate-user"),
        pytest.param(_with_surrogate("model", "gpt-4o-mini"), "model", id="surrogate-model"),
    ],
)
def test_bodies_that_broke_the_sidecar_are_400(
    target: Target, body: bytes, param: str | None
) -> None:
    answer = target.post(b"/v1/chat/completions", body)
    assert_refused_in_the_envelope(answer)
    assert json.loads(answer.body)["error"]["param"] == param


def test_a_broken_gzip_body_is_400(target: Target) -> None:
    answer = target.post(
        b"/v1/chat/completions", _gzip_broken(b"\x00garbage"), (b"Content-Encoding", b"gzip")
    )
    assert_refused_in_the_envelope(answer)


def test_a_content_part_whose_type_is_a_list_is_not_a_500(target: Target) -> None:
    body = _chat(messages=[{"role": "user", "content": [{"type": ["image_url"]}]}])
    assert_sidecar_kept_its_head(target.post(b"/v1/chat/completions", json.dumps(body).encode()))


def test_an_absurd_reservation_is_not_a_500(target: Target) -> None:
    body = {"model": "gpt-4o-mini", "prompt": ["tell me a story"] * 2000, "n": 128,
            "max_tokens": 10**7}  # fmt: skip
    assert_sidecar_kept_its_head(target.post(b"/v1/completions", json.dumps(body).encode()))


PARSER_ERRORS = [
    pytest.param(b"GE\x01T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-method"),
    pytest.param(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", id="no-colon"),
    pytest.param(b"GET /v1/models HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", id="long-line"),
    pytest.param(b"GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n", id="bad-version"),
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        id="cl-and-te",
    ),
    pytest.param(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        id="negative-length",
    ),
]


@pytest.mark.parametrize("raw", PARSER_ERRORS)
def test_requests_aiohttp_cannot_parse_get_the_envelope_and_one_quiet_log_line(
    target: Target, raw: bytes
) -> None:
    before = target.sidecar.log_text()
    answer = target.send(raw)
    assert_refused_in_the_envelope(answer)

    def logged() -> bool:
        return "invalid HTTP request" in target.sidecar.log_text()[len(before) :]

    wait_until_sync(logged, timeout_s=5, what="the parser error's log line")
    new_lines = target.sidecar.log_text()[len(before) :].splitlines()
    parser_lines = [line for line in new_lines if "invalid HTTP request" in line]
    assert len(parser_lines) == 1, new_lines
    entry = json.loads(parser_lines[0])
    assert entry["level"] in {"info", "warning"}
    assert "exc" not in entry
    assert "Traceback" not in "\n".join(new_lines)


@FUZZ_SETTINGS
@given(
    garbage=st.binary(min_size=1, max_size=300).filter(lambda raw: b"\r\n\r\n" not in raw),
    where=st.sampled_from(["method", "version", "header"]),
)
def test_any_request_head_gets_an_answer_in_the_envelope_or_none(
    target: Target, garbage: bytes, where: str
) -> None:
    heads = {
        "method": garbage + b" /v1/models HTTP/1.1\r\nHost: x\r\n",
        "version": b"GET /v1/models HTTP/" + garbage + b"\r\nHost: x\r\n",
        "header": b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + garbage + b"\r\n",
    }
    answer = target.send(heads[where] + b"Connection: close\r\n\r\n")
    if answer.status == 0:  # bytes that are not HTTP may just be dropped
        return
    assert answer.status < 500, answer
    # Refused by aiohttp's parser (400) or, when it parses, by the sidecar (no key: 401).
    assert b"content-type: application/json" in answer.head.lower(), answer.head
    assert set(json.loads(answer.body)["error"]) == {"message", "type", "param", "code"}
