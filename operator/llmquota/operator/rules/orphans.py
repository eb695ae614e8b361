"""Which policies in Redis no ApiKey owns (withdrawn by `services.orphan_sweep`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

__all__ = ["LiveKey", "orphaned_policies"]

LiveKey = tuple[str, str]
"""(namespace, name) of an ApiKey that exists."""


def orphaned_policies(
    owners: Mapping[str, LiveKey],
    live: Collection[LiveKey],
    written: Mapping[LiveKey, str],
    watched: Collection[str],
) -> list[str]:
    """The key hashes whose policy no ApiKey owns.

    `owners`: hash -> the (namespace, name) its policy names; `live`: ApiKeys that exist;
    `written`: the hash this process last wrote per ApiKey; `watched`: the namespaces the
    operator watches (empty: all). A policy is orphaned when its ApiKey is gone, or when
    its ApiKey has since been written under another hash (the key rotated while the
    operator was down). A live key this process has not applied yet keeps its policy.
    """
    present = set(live)
    orphans: list[str] = []
    for key_hash, owner in owners.items():
        if watched and owner[0] not in watched:
            continue
        gone = owner not in present
        rotated = owner in written and written[owner] != key_hash
        if gone or rotated:
            orphans.append(key_hash)
    return sorted(orphans)
