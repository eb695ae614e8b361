"""Conditions: lastTransitionTime moves only on flips; order is stable; Events on flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmquota.operator.rules.conditions import Observation, event_for, format_time, merge_conditions

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_gets_now_and_is_a_transition() -> None:
    merged, transitions = merge_conditions(
        [], [Observation("Ready", "True", "Applied", "ok")], generation=3, now=T0
    )
    assert merged == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Applied",
            "message": "ok",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ]
    assert [(t.type, t.status, t.previous) for t in transitions] == [("Ready", "True", None)]


def test_same_status_keeps_transition_time_and_is_equal() -> None:
    first, _ = merge_conditions([], [Observation("Ready", "True", "Applied")], generation=1, now=T0)
    again, transitions = merge_conditions(
        first, [Observation("Ready", "True", "Applied")], generation=1, now=T1
    )
    assert again == first
    assert transitions == []


def test_flip_moves_transition_time_and_reports_previous() -> None:
    first, _ = merge_conditions([], [Observation("Ready", "True", "Applied")], generation=1, now=T0)
    flipped, transitions = merge_conditions(
        first, [Observation("Ready", "False", "BudgetNotFound", "gone")], generation=2, now=T1
    )
    assert flipped[0]["lastTransitionTime"] == format_time(T1)
    assert flipped[0]["observedGeneration"] == 2
    assert transitions[0].previous == "True"


def test_unobserved_types_are_kept_and_order_is_stable() -> None:
    first, _ = merge_conditions(
        [],
        [Observation("Ready", "True", "Applied"), Observation("Expired", "False", "NotExpired")],
        generation=1,
        now=T0,
    )
    merged, _ = merge_conditions(
        first, [Observation("Expired", "False", "NotExpired")], generation=1, now=T1
    )
    assert [c["type"] for c in merged] == ["Ready", "Expired"]
    assert merged == first


def test_long_messages_are_capped() -> None:
    merged, _ = merge_conditions(
        [], [Observation("Ready", "False", "X", "m" * 5000)], generation=None, now=T0
    )
    assert len(merged[0]["message"]) == 1024


def test_events_for_going_bad_and_recovering() -> None:
    _, bad = merge_conditions(
        [{"type": "BudgetExceeded", "status": "False", "lastTransitionTime": "x"}],
        [Observation("BudgetExceeded", "True", "BudgetExhausted", "spend 10 of 10")],
        generation=1,
        now=T0,
    )
    assert event_for(bad[0]) == ("Warning", "BudgetExceeded", "spend 10 of 10")
    _, good = merge_conditions(
        [{"type": "BudgetExceeded", "status": "True", "lastTransitionTime": "x"}],
        [Observation("BudgetExceeded", "False", "WithinBudget", "spend 0")],
        generation=1,
        now=T0,
    )
    assert event_for(good[0]) == ("Normal", "WithinBudget", "spend 0")


def test_first_healthy_observation_is_not_news() -> None:
    _, transitions = merge_conditions(
        [],
        [Observation("Ready", "True", "Applied"), Observation("Blocked", "False", "NotBlocked")],
        generation=1,
        now=T0,
    )
    assert [event_for(t) for t in transitions] == [None, None]
    _, failing = merge_conditions(
        [], [Observation("Ready", "False", "TeamNotFound", "no team")], generation=1, now=T0
    )
    assert event_for(failing[0]) == ("Warning", "TeamNotFound", "no team")
