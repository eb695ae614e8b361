"""Which policies no ApiKey owns: gone keys, rotated hashes, other namespaces left alone."""

from __future__ import annotations

from llmquota.operator.rules.orphans import orphaned_policies


def test_a_policy_whose_apikey_is_gone_is_orphaned() -> None:
    owners = {"h-live": ("ns", "live"), "h-gone": ("ns", "gone")}
    assert orphaned_policies(owners, [("ns", "live")], {}, ()) == ["h-gone"]


def test_a_hash_the_apikey_no_longer_uses_is_orphaned() -> None:
    owners = {"h-old": ("ns", "bot"), "h-new": ("ns", "bot")}
    written = {("ns", "bot"): "h-new"}
    assert orphaned_policies(owners, [("ns", "bot")], written, ()) == ["h-old"]


def test_a_live_key_not_applied_yet_keeps_its_policy() -> None:
    owners = {"h-a": ("ns", "bot"), "h-b": ("ns", "bot")}
    assert orphaned_policies(owners, [("ns", "bot")], {}, ()) == []


def test_policies_of_namespaces_not_watched_are_never_touched() -> None:
    owners = {"h-ours": ("ours", "gone"), "h-theirs": ("theirs", "gone")}
    assert orphaned_policies(owners, [], {}, ("ours",)) == ["h-ours"]
    assert orphaned_policies(owners, [], {}, ()) == ["h-ours", "h-theirs"]
