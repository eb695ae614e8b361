"""How a virtual key is known without being kept: its SHA-256 and a short hint.

Redis, statuses, logs and metrics only ever see these. Looking a policy up by the hash
of the presented key is a lookup of a digest, so it leaks nothing about the stored keys
through timing; `hmac.compare_digest` guards the one place keys are compared directly.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["hash_key", "key_hint", "keys_equal"]


def _key_bytes(key: str) -> bytes:
    """UTF-8 that never raises: a header that is not UTF-8 reaches us with lone
    surrogates (aiohttp decodes with `surrogateescape`), which plain `encode()` refuses.
    Real keys are text, so such a key only has to hash to something no key has."""
    return key.encode("utf-8", "surrogatepass")


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: its identity in Redis and in policies."""
    return hashlib.sha256(_key_bytes(key)).hexdigest()


def key_hint(key: str) -> str:
    """What a status may show of a key: `sk-...a1b2`."""
    prefix = "sk-" if key.startswith("sk-") else ""
    return f"{prefix}...{key[-4:]}" if len(key) >= 8 else "..."


def keys_equal(presented: str, stored: str) -> bool:
    """Compare two keys in constant time."""
    return hmac.compare_digest(_key_bytes(presented), _key_bytes(stored))
