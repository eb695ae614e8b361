"""`--health-listen`: the probes and /metrics on a second address, and nothing else there.

In a Pod this is the Pod's IP, where the kubelet probes and Prometheus scrapes, while
the proxy itself stays on 127.0.0.1: whoever reaches the Pod's IP must not be able to
spend through it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.sidecar.processes import Process, free_port, start_sidecar

from llmquota.store import EmbeddedRedis

pytestmark = pytest.mark.e2e


@pytest.fixture
def health_sidecar(
    tmp_path: Path, sidecar_redis: EmbeddedRedis, fake_upstream: Process
) -> Iterator[tuple[Process, str]]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    health = f"127.0.0.1:{free_port()}"
    process = start_sidecar(
        tmp_path, manifests, sidecar_redis.url, fake_upstream, "--health-listen", health
    )
    yield process, f"http://{health}"
    process.stop()


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_probes_and_metrics_answer_on_the_health_address(
    health_sidecar: tuple[Process, str],
) -> None:
    _, health = health_sidecar
    assert _get(f"{health}/healthz")[0] == 200
    assert _get(f"{health}/readyz")[0] == 200
    status, body = _get(f"{health}/metrics")
    assert status == 200
    assert b"llmquota_overhead_seconds" in body


def test_the_proxy_is_not_served_on_the_health_address(
    health_sidecar: tuple[Process, str],
) -> None:
    process, health = health_sidecar
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    assert _get(f"{health}/v1/chat/completions", body)[0] == 404
    assert _get(f"{health}/v1/models")[0] == 404
    # ... while the proxy address still serves the probes too.
    assert _get(f"{process.url}/readyz")[0] == 200
