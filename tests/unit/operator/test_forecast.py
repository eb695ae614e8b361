"""The forecast's arithmetic on a fake clock: burn rate over the span, exhaustsAt,
BudgetAtRisk, the quiet start of a window and a restart without history."""

from __future__ import annotations

from llmquota.durations import NEVER, Window
from llmquota.operator.rules.forecast import (
    HOUR_MS,
    SAMPLES_PER_SPAN,
    Forecast,
    SpendSample,
    at_risk_observation,
    forecast,
    forecast_fields,
    record_sample,
)
from llmquota.policy.limits import nanos

MINUTE = 60_000
START = 1_800_000_000_000  # a window start (epoch ms), on the minute
DAY_WINDOW = Window(START, START + 24 * HOUR_MS)
SPAN = HOUR_MS


def run(
    spend_per_minute_usd: float, minutes: int, window: Window = DAY_WINDOW
) -> list[SpendSample]:
    """Samples one a minute from the window's start, at a steady rate."""
    history: list[SpendSample] = []
    for minute in range(1, minutes + 1):
        at = window.start_ms + minute * MINUTE
        history = record_sample(history, (at, nanos(spend_per_minute_usd * minute)), window, SPAN)
    return history


def predict(
    history: list[SpendSample],
    now_ms: int,
    spend_usd: float,
    *,
    max_usd: float | None = 100,
    reserved_usd: float = 0,
    window: Window = DAY_WINDOW,
    anchor_ms: int = START,
) -> Forecast | None:
    return forecast(
        history,
        now_ms=now_ms,
        spend_nanos=nanos(spend_usd),
        reserved_nanos=nanos(reserved_usd),
        max_nanos=None if max_usd is None else nanos(max_usd),
        window=window,
        anchor_ms=anchor_ms,
        span_ms=SPAN,
    )


def test_steady_spend_gives_its_rate_and_when_it_runs_out() -> None:
    history = run(0.01, 90)  # 0.6 USD/h for 90 minutes: 0.9 USD spent
    now = START + 90 * MINUTE
    prediction = predict(history, now, 0.9)
    assert prediction is not None
    assert prediction.burn_nanos_per_hour == nanos(0.6)
    # 99.1 USD left at 0.6 USD/h: 165 h ahead, past the day's reset.
    assert prediction.exhausts_at_ms is not None
    assert abs(prediction.exhausts_at_ms - (now + 99.1 / 0.6 * HOUR_MS)) <= 3 * HOUR_MS
    assert not prediction.at_risk
    observed = at_risk_observation(prediction)
    assert (observed.status, observed.reason) == ("False", "LastsUntilReset")


def test_the_rate_is_of_the_last_span_not_of_the_whole_window() -> None:
    # Nothing for 2 hours, then 1 USD a minute for the last hour.
    history: list[SpendSample] = []
    for minute in range(1, 181):
        spend = max(0, minute - 120)
        history = record_sample(history, (START + minute * MINUTE, nanos(spend)), DAY_WINDOW, SPAN)
    prediction = predict(history, START + 180 * MINUTE, 60)
    assert prediction is not None
    assert prediction.burn_nanos_per_hour == nanos(60)
    assert prediction.at_risk  # 40 USD left: 40 minutes, long before the reset
    observed = at_risk_observation(prediction)
    assert (observed.status, observed.reason) == ("True", "ExhaustsBeforeReset")
    assert "60 USD/h" in observed.message


def test_no_forecast_in_the_first_quarter_of_the_span() -> None:
    # One big request in the first minute would extrapolate to 600 USD/h.
    early = record_sample([], (START + MINUTE, nanos(10)), DAY_WINDOW, SPAN)
    assert predict(early, START + MINUTE, 10) is None
    assert predict(early, START + 14 * MINUTE, 10) is None
    later = predict(early, START + 15 * MINUTE, 10)
    assert later is not None
    assert later.burn_nanos_per_hour == nanos(40)  # measured from the window's start
    observed = at_risk_observation(None)
    assert (observed.status, observed.reason) == ("False", "NoForecast")


def test_a_short_window_needs_a_quarter_of_itself() -> None:
    minute_window = Window(START, START + MINUTE)
    assert predict([], START + 14_000, 1, window=minute_window) is None
    prediction = predict([], START + 15_000, 1, window=minute_window)
    assert prediction is not None
    assert prediction.burn_nanos_per_hour == nanos(240)


def test_after_a_restart_the_window_start_is_the_origin() -> None:
    # No samples at all (the operator just started), 3 hours into the window.
    prediction = predict([], START + 3 * HOUR_MS, 6)
    assert prediction is not None
    assert prediction.burn_nanos_per_hour == nanos(2)


def test_a_budget_that_never_resets_is_measured_from_the_subject_creation() -> None:
    forever = Window(0, NEVER)
    created = START
    prediction = predict([], created + 2 * HOUR_MS, 4, window=forever, anchor_ms=created)
    assert prediction is not None
    assert prediction.burn_nanos_per_hour == nanos(2)
    assert prediction.at_risk  # it never resets, so any exhaustion comes first
    assert "never resets" in at_risk_observation(prediction).message


def test_reserved_spend_counts_as_admission_counts_it() -> None:
    history = run(1, 30)
    now = START + 30 * MINUTE
    without = predict(history, now, 30)
    with_reserved = predict(history, now, 30, reserved_usd=40)
    assert without is not None
    assert with_reserved is not None
    assert without.exhausts_at_ms is not None
    assert with_reserved.exhausts_at_ms is not None
    assert with_reserved.exhausts_at_ms < without.exhausts_at_ms


def test_no_exhaustion_without_max_without_spend_or_when_already_exhausted() -> None:
    now = START + 30 * MINUTE
    history = run(1, 30)
    no_max = predict(history, now, 30, max_usd=None)
    assert no_max is not None
    assert no_max.exhausts_at_ms is None
    assert at_risk_observation(no_max).reason == "NoBudget"
    idle = predict(run(0, 30), now, 0)
    assert idle is not None
    assert idle.exhausts_at_ms is None
    assert at_risk_observation(idle).reason == "NotSpending"
    spent = predict(history, now, 100)
    assert spent is not None
    assert spent.exhausts_at_ms is None
    assert at_risk_observation(spent).reason == "AlreadyExhausted"


def test_an_idle_forecast_changes_once_a_step_not_every_sync() -> None:
    history = run(0.5, 60)  # 30 USD spent at 30 USD/h, then nothing: 70 USD left
    fields = [
        forecast_fields(predict(history, START + 60 * MINUTE + offset, 30))
        for offset in range(0, 60_000, 5000)  # twelve syncs, 5 s apart
    ]
    distinct = {str(f) for f in fields}
    assert len(distinct) <= 2  # exhaustsAt is ~2h20m ahead: rounded to the minute
    assert fields[0]["forecast"] == {
        "burnRateUsdPerHour": 30.0,
        "exhaustsAt": "2027-01-15T11:20:00Z",
    }


def test_history_is_trimmed_to_the_window_and_the_span() -> None:
    history = run(1, 600)  # ten hours, a sample a minute
    assert len(history) <= SAMPLES_PER_SPAN + 2
    assert history[0][0] <= START + 600 * MINUTE - SPAN  # the origin of the span stays
    next_window = Window(DAY_WINDOW.end_ms, DAY_WINDOW.end_ms + 24 * HOUR_MS)
    fresh = record_sample(history, (next_window.start_ms + MINUTE, 0), next_window, SPAN)
    assert fresh == [(next_window.start_ms + MINUTE, 0)]
    assert forecast_fields(None) == {"forecast": None}


def test_a_forecast_hovering_at_the_reset_flips_the_condition_once_not_every_sync() -> None:
    """A burn rate that puts exhaustion a minute either side of the reset, sync after sync,
    must not post a Warning and a Normal Event at each one: once at risk, the condition
    clears only when the budget lasts well past the reset."""
    held = False
    flips = 0
    for sync in range(20):
        exhausts = DAY_WINDOW.end_ms + (MINUTE if sync % 2 else -MINUTE)
        prediction = Forecast(nanos(10), exhausts, DAY_WINDOW, nanos(60))
        observed = at_risk_observation(prediction, was_at_risk=held)
        flips += (observed.status == "True") != held
        held = observed.status == "True"
    assert flips == 1
    assert held
    near = at_risk_observation(
        Forecast(nanos(10), DAY_WINDOW.end_ms + MINUTE, DAY_WINDOW, nanos(60)), was_at_risk=True
    )
    assert (near.status, near.reason) == ("True", "ExhaustsNearReset")
    # Lasting past the reset by more than a twentieth of the window (72 min) clears it.
    clear = at_risk_observation(
        Forecast(nanos(10), DAY_WINDOW.end_ms + 2 * HOUR_MS, DAY_WINDOW, nanos(60)),
        was_at_risk=True,
    )
    assert (clear.status, clear.reason) == ("False", "LastsUntilReset")
    # Not at risk before: a forecast just past the reset does not make it so.
    assert (
        at_risk_observation(
            Forecast(nanos(10), DAY_WINDOW.end_ms + MINUTE, DAY_WINDOW, nanos(60))
        ).status
        == "False"
    )
