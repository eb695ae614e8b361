"""HTTP/1.1 over a bare socket: requests no well-behaved client library would send.

aiohttp and httpx refuse CR/LF in header values, lying Content-Lengths and bodies that
never end; hostile clients do not, so the sidecar is tested with exactly the bytes given.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RawResponse", "build_request", "exchange"]


@dataclass(frozen=True)
class RawResponse:
    """Status (0 when the server closed without answering), headers and body bytes."""

    status: int
    head: bytes
    body: bytes


def build_request(
    method: str,
    path: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    content_length: int | None = None,
) -> bytes:
    """The bytes of one request; Content-Length is the body's unless given."""
    length = len(body) if content_length is None else content_length
    lines = [
        method.encode() + b" " + path + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
        *(name + b": " + value for name, value in headers),
        b"Content-Length: " + str(length).encode(),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(port: int, raw: bytes, timeout_s: float = 15) -> RawResponse:
    """Send `raw`, read until the server closes (the request asks it to)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        # The server may answer (413) and close before reading all of it.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(raw)
        received = bytearray()
        while True:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received.extend(chunk)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ")
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return RawResponse(status, head, body)
