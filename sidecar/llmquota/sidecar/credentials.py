"""The upstream's credential, read from a mounted Secret and re-read when it rotates.

Kubernetes updates a mounted Secret by swapping a symlink, so the file's mtime (seen
through the link) changes; the file is checked at most once a second.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

__all__ = ["UpstreamCredential"]

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


class UpstreamCredential:
    """The upstream key from `path` (None: send no credential)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._value: str | None = None
        self._mtime_ns = -1
        self._checked_at = -CHECK_INTERVAL_S
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file when it changed since the last read."""
        if self.path is None:
            return
        self._checked_at = time.monotonic()
        try:
            mtime_ns = self.path.stat().st_mtime_ns
            if mtime_ns != self._mtime_ns:
                self._value = self.path.read_text().strip() or None
                self._mtime_ns = mtime_ns
        except OSError as error:
            logger.warning("upstream key file %s unreadable: %s", self.path, error)

    @property
    def value(self) -> str | None:
        """The current credential, re-checked at most once a second."""
        if self.path is not None and time.monotonic() - self._checked_at >= CHECK_INTERVAL_S:
            self.refresh()
        return self._value
