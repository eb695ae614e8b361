"""Keys are compared in constant time and hashed without ever raising; a Secret's key
never reaches a loader problem (which is logged), even when its YAML is broken."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmquota.manifests import ManifestResolver
from llmquota.policy import key_hash

KEY = "sk-secret-handling-0001"


def test_keys_equal_compares_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(left: bytes, right: bytes) -> bool:
        compared.append((left, right))
        return compare_digest(left, right)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert key_hash.keys_equal(KEY, KEY)
    assert not key_hash.keys_equal(KEY, KEY[:-1] + "2")
    assert not key_hash.keys_equal(KEY, "")
    assert compared == [(KEY.encode(), KEY.encode()), (KEY.encode(), (KEY[:-1] + "2").encode()),
                        (KEY.encode(), b"")]  # fmt: skip


@given(presented=st.text(), stored=st.text())
def test_hashing_and_comparing_any_text_never_raises(presented: str, stored: str) -> None:
    assert key_hash.keys_equal(presented, stored) == (presented == stored)
    assert len(key_hash.hash_key(presented)) == 64


def test_a_key_is_known_by_its_sha256() -> None:
    assert key_hash.hash_key(KEY) == hashlib.sha256(KEY.encode()).hexdigest()
    assert KEY not in key_hash.key_hint(KEY)
    assert key_hash.key_hint(KEY) == "sk-...0001"


@pytest.mark.parametrize(
    "broken",
    [
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\nstringData:\n  key: {KEY} : [x\n",
        f'apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\nstringData: {{key: "{KEY}}}\n',
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\nstringData:\n\tkey: {KEY}\n",
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\ndata: {{key: {KEY}}}\n",
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\nstringData: [{KEY}]\n",
    ],
    ids=["mapping-error", "unterminated-quote", "tab-indent", "data-not-base64", "not-a-map"],
)
def test_a_broken_secret_manifest_is_reported_without_its_key(broken: str) -> None:
    resolver = ManifestResolver()
    resolution = resolver.resolve(resolver.parse([("secret.yaml", broken)]))
    assert resolution.problems
    for problem in resolution.problems:
        assert KEY not in str(problem)
        assert KEY[3:] not in str(problem)
