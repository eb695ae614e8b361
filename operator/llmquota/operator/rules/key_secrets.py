"""ApiKey Secrets: generating a key, reading one, and the Secret the operator owns.

The key itself lives only in the Secret; Redis, statuses, logs and metrics see its hash
(`llmquota.policy.key_hash`) or its hint.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from typing import Any

__all__ = [
    "KEY_FIELD",
    "KEY_LENGTH",
    "SECRET_LABEL",
    "generate_key",
    "key_from_secret",
    "owned_secret",
    "secret_name_of",
]

SECRET_LABEL = "llmquota.dev/apikey"  # noqa: S105 (a label name)
"""Label on Secrets that hold an ApiKey's key; its value is the ApiKey's name."""
KEY_FIELD = "key"
KEY_LENGTH = 32


def generate_key() -> str:
    """`sk-` and 32 URL-safe random characters (192 bits)."""
    return "sk-" + secrets.token_urlsafe(KEY_LENGTH * 3 // 4)[:KEY_LENGTH]


def secret_name_of(apikey_name: str, spec: Mapping[str, Any]) -> str:
    """The Secret an ApiKey's key is in: spec.secretName, or the ApiKey's own name."""
    return str(spec.get("secretName") or apikey_name)


def key_from_secret(secret: Mapping[str, Any] | None) -> str | None:
    """The key in a Secret's data.key (or stringData.key), None when absent or empty."""
    if not secret:
        return None
    encoded = (secret.get("data") or {}).get(KEY_FIELD)
    if encoded:
        try:
            key = base64.b64decode(encoded, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return key or None
    plain = (secret.get("stringData") or {}).get(KEY_FIELD)
    return str(plain).strip() or None if plain else None


def owned_secret(
    *, name: str, namespace: str, key: str, owner: Mapping[str, Any]
) -> dict[str, Any]:
    """A Secret holding `key`, owned by the ApiKey `owner` (deleted with it)."""
    owner_meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {SECRET_LABEL: owner_meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner_meta["name"],
                    "uid": owner_meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {KEY_FIELD: base64.b64encode(key.encode()).decode()},
    }
