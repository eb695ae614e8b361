"""Clients that open connections and dribble their headers (slowloris), against a sidecar
whose descriptors are few: new clients are still served, and every dribbler is cut off
within `--header-timeout` however steadily it sends."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time

import openai
import pytest
from tests.reliability.harness import wait_until
from tests.reliability.rig import Rig

pytestmark = pytest.mark.e2e

KEY = "sk-reliability-slowloris-0001"
MANIFESTS = f"""
apiVersion: llmquota.dev/v1alpha1
kind: ApiKey
metadata: {{name: slowloris-bot}}
spec: {{budget: {{maxBudget: 100}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: slowloris-bot}}
stringData: {{key: {KEY}}}
"""
FD_LIMIT = 256
DRIBBLERS = 600
HEADER_TIMEOUT_S = 3


def dribble_open(port: int, count: int) -> list[socket.socket]:
    """Connections that have sent a request line and one header, and no more (yet)."""
    opened = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        opened.append(connection)
    return opened


def dribble_more(connections: list[socket.socket]) -> int:
    """One more header byte on each; how many the sidecar has closed."""
    closed = 0
    for connection in connections:
        try:
            connection.sendall(b"X")
            connection.setblocking(False)
            try:
                closed += connection.recv(1) == b""
            except BlockingIOError:
                pass
            finally:
                connection.setblocking(True)
        except OSError:
            closed += 1
    return closed


def ask(client: openai.OpenAI) -> bool:
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
    except openai.APIError:
        return False
    return True


async def test_dribbling_clients_neither_exhaust_descriptors_nor_stay(rig: Rig) -> None:
    policies = await rig.apply(MANIFESTS)
    sidecar = rig.start_sidecar(
        "--max-connections", "100", "--header-timeout", str(HEADER_TIMEOUT_S)
    )
    await rig.wait_for_policies(policies.values())
    # The sidecar gets few descriptors, as in a container with a low `ulimit -n`.
    resource.prlimit(sidecar.popen.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    port = int(sidecar.url.rsplit(":", 1)[1])
    client = rig.client(sidecar, KEY, timeout=10)
    dribblers = await asyncio.to_thread(dribble_open, port, DRIBBLERS)
    try:
        started = time.monotonic()
        served = [await asyncio.to_thread(ask, client) for _ in range(20)]
        assert all(served), served
        await asyncio.to_thread(dribble_more, dribblers)

        async def all_cut_off() -> bool:
            return await asyncio.to_thread(dribble_more, dribblers) == DRIBBLERS

        await wait_until(all_cut_off, timeout_s=HEADER_TIMEOUT_S + 10, poll_s=0.5)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 10
        assert await asyncio.to_thread(ask, client)
        assert sidecar.popen.poll() is None
    finally:
        for connection in dribblers:
            with contextlib.suppress(OSError):
                connection.close()


async def test_a_dribbler_is_cut_off_at_the_header_timeout(rig: Rig) -> None:
    policies = await rig.apply(MANIFESTS)
    sidecar = rig.start_sidecar("--header-timeout", str(HEADER_TIMEOUT_S))
    await rig.wait_for_policies(policies.values())
    port = int(sidecar.url.rsplit(":", 1)[1])
    (dribbler,) = await asyncio.to_thread(dribble_open, port, 1)
    started = time.monotonic()
    try:

        async def cut_off() -> bool:
            return await asyncio.to_thread(dribble_more, [dribbler]) == 1

        await wait_until(cut_off, timeout_s=HEADER_TIMEOUT_S + 5, poll_s=0.25)
        assert time.monotonic() - started >= HEADER_TIMEOUT_S - 1
    finally:
        dribbler.close()
