"""Request ids name reservations in the store that all sidecars share: never reused."""

from __future__ import annotations

import os
import re

from llmquota.sidecar.recording import _REQUEST_IDS


def test_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = [_REQUEST_IDS.next() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_worker_draws_ids_of_its_own() -> None:
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: report its first id and leave at once
        os.write(writer, _REQUEST_IDS.next().encode())
        os._exit(0)
    os.close(writer)
    child_id = os.read(reader, 64).decode()
    os.close(reader)
    os.waitpid(child, 0)
    parent_id = _REQUEST_IDS.next()
    assert len(child_id) == 32
    assert child_id[:16] != parent_id[:16]
