"""What keeps a standalone sidecar from being ready, as /readyz lists it."""

from __future__ import annotations

from llmquota.sidecar.standalone import StandaloneStatus, new_generation


def test_ready_only_once_loaded_without_problems_on_an_intact_store() -> None:
    status = StandaloneStatus()
    assert status.not_ready_reasons() == ["manifests not loaded yet"]
    status.manifest_problems = ["a.yaml Budget default/tier: spec.maxBudgett: Extra inputs"]
    assert status.not_ready_reasons() == [
        "manifest problem (last good policies kept): a.yaml Budget default/tier: "
        "spec.maxBudgett: Extra inputs"
    ]
    status.manifest_problems = []
    status.loaded.set()
    assert status.not_ready_reasons() == []
    status.store_problem = "the store lost its data"
    assert status.not_ready_reasons() == ["the store lost its data"]


def test_generations_are_digits_as_restore_lua_keeps_them() -> None:
    generations = {new_generation() for _ in range(100)}
    assert len(generations) == 100
    assert all(generation.isdigit() and len(generation) == 19 for generation in generations)
