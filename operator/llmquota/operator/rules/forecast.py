"""The spend forecast: burn rate, when the budget runs out, and whether before it resets.

Pure arithmetic over spend samples; the status sync takes one sample per subject per
pass and keeps them in memory (`record_sample`).

- **Span.** The burn rate is the spend over the last `--forecast-span` (default 1 h) of
  the current window, divided by that time: from the spend at the start of the span to
  the spend now. Spend at the window's start is zero by definition, so a window younger
  than the span is measured from its start exactly. Where no sample reaches back to the
  span's start (the operator restarted), the window's start (or, for a budget that never
  resets, the subject's creation) serves as the origin: an average over a longer time,
  but exact, so a restart does not blank the forecast.
- **Noise at window start.** A single request in the first seconds of a window would
  extrapolate to an absurd rate, so there is no forecast until the measured time covers
  a quarter of the span or of the window, whichever is shorter (15 min for a 1 h span
  and a long window; 15 s for a 1 min window).
- **Runs out.** `exhaustsAt` = now + (maxBudget - spend - reserved) / rate, by
  admission's own rule (`llmquota.policy.exhaustion`); none without a maxBudget, when
  nothing is spent, or when the budget is already exhausted (BudgetExceeded says so).
  `BudgetAtRisk` is True when that moment falls before the window resets.
- **Hysteresis.** Once True, it stays True while the budget would run out less than
  a twentieth of the window (`CLEAR_FRACTION`) after the reset, so that a rate hovering
  at the boundary flips it (and posts its Events) once, not at every sync.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime

from llmquota.durations import NEVER, Window
from llmquota.operator.rules.conditions import Observation, format_time
from llmquota.policy.exhaustion import budget_left_nanos
from llmquota.policy.limits import usd

__all__ = [
    "HOUR_MS",
    "SAMPLES_PER_SPAN",
    "Forecast",
    "SpendSample",
    "at_risk_observation",
    "forecast",
    "forecast_fields",
    "record_sample",
]

HOUR_MS = 3_600_000
SAMPLES_PER_SPAN = 60
"""Samples kept per span (one a minute for 1 h): memory per subject stays small."""
COVERAGE_FRACTION = 4
"""The forecast needs a quarter of the span (or window) measured before it says anything."""

CLEAR_FRACTION = 20
"""BudgetAtRisk, once True, clears when exhaustion falls past the reset by more than this
fraction of the window (72 min of a day)."""

RATE_DIGITS = 2
EXHAUSTS_STEPS_MS = (1000, 10_000, 60_000, 600_000, HOUR_MS, 6 * HOUR_MS, 24 * HOUR_MS)
"""The rate is rounded to RATE_DIGITS significant digits, and `exhaustsAt` (computed from
the rounded rate) to one of these steps, finer than a 50th of the time ahead: a forecast
then changes about 50 times over its horizon, not at every sync, and so does the status."""

SpendSample = tuple[int, int]
"""(epoch ms, spend in nano-USD) of one subject at one status sync."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """The burn rate over the span and when, at that rate, the budget is exhausted."""

    burn_nanos_per_hour: int
    exhausts_at_ms: int | None
    window: Window
    left_nanos: int | None
    """What admission still lets requests reserve; None without a maxBudget."""

    @property
    def at_risk(self) -> bool:
        """Whether the budget runs out before its window resets."""
        if self.exhausts_at_ms is None:
            return False
        return self.window.end_ms == NEVER or self.exhausts_at_ms < self.window.end_ms

    @property
    def near_reset(self) -> bool:
        """Whether it runs out after the reset, but by less than CLEAR_FRACTION of the
        window: not at risk, yet not clear of it either."""
        if self.exhausts_at_ms is None or self.window.end_ms == NEVER:
            return False
        margin_ms = (self.window.end_ms - self.window.start_ms) // CLEAR_FRACTION
        return self.exhausts_at_ms < self.window.end_ms + margin_ms


def record_sample(
    history: list[SpendSample], sample: SpendSample, window: Window, span_ms: int
) -> list[SpendSample]:
    """`history` with `sample` added, trimmed to what a forecast of the span can use.

    Samples of an earlier window go (their spend was reset); of those older than the
    span only the newest stays (the span's origin); a sample closer than span /
    SAMPLES_PER_SPAN to the last kept one is not kept (the current spend is passed to
    `forecast` anyway).
    """
    at_ms = sample[0]
    kept = [s for s in history if window.start_ms <= s[0] <= at_ms]
    cut = bisect.bisect_right([s[0] for s in kept], at_ms - span_ms)
    kept = kept[max(0, cut - 1) :]
    if not kept or at_ms - kept[-1][0] >= span_ms // SAMPLES_PER_SPAN:
        kept.append(sample)
    return kept


def _origin(
    history: list[SpendSample], now_ms: int, window: Window, anchor_ms: int, span_ms: int
) -> SpendSample | None:
    """Where the rate is measured from: spend at (or as near as known to) now - span."""
    span_start = now_ms - span_ms
    counted_from = max(window.start_ms, anchor_ms)
    if counted_from >= span_start:
        return (counted_from, 0)  # the window (or subject) is younger than the span
    before = [s for s in history if s[0] <= span_start]
    if before:
        return before[-1]
    if counted_from > 0:
        return (counted_from, 0)  # no history reaches back: the exact, longer average
    return history[0] if history else None


def forecast(
    history: list[SpendSample],
    *,
    now_ms: int,
    spend_nanos: int,
    reserved_nanos: int,
    max_nanos: int | None,
    window: Window,
    anchor_ms: int,
    span_ms: int,
) -> Forecast | None:
    """The forecast now, or None while too little of the window has been measured."""
    origin = _origin(history, now_ms, window, anchor_ms, span_ms)
    if origin is None:
        return None
    measured_ms = now_ms - origin[0]
    window_ms = span_ms if window.end_ms == NEVER else window.end_ms - window.start_ms
    if measured_ms <= 0 or measured_ms < min(span_ms, window_ms) // COVERAGE_FRACTION:
        return None
    spent = max(0, spend_nanos - origin[1])
    per_hour = _significant(spent * HOUR_MS // measured_ms)
    left = budget_left_nanos(max_nanos, spend_nanos, reserved_nanos)
    exhausts_at = None
    if left and per_hour:
        runs_for_ms = left * HOUR_MS // per_hour
        exhausts_at = _rounded(now_ms + runs_for_ms, _step_ms(runs_for_ms))
    return Forecast(per_hour, exhausts_at, window, left)


def _significant(value: int, digits: int = RATE_DIGITS) -> int:
    """`value` rounded to `digits` significant digits."""
    if value <= 0:
        return 0
    scale = int(10 ** max(0, len(str(value)) - digits))
    return (value + scale // 2) // scale * scale


def _step_ms(ahead_ms: int) -> int:
    """The coarsest of EXHAUSTS_STEPS_MS finer than a 50th of the time ahead."""
    return max((s for s in EXHAUSTS_STEPS_MS if s <= ahead_ms // 50), default=1000)


def _rounded(moment_ms: int, step_ms: int) -> int:
    return (moment_ms + step_ms // 2) // step_ms * step_ms


def _time(moment_ms: int) -> str:
    return format_time(datetime.fromtimestamp(moment_ms / 1000, tz=UTC))


def forecast_fields(prediction: Forecast | None) -> dict[str, object]:
    """`status.forecast`: {burnRateUsdPerHour, exhaustsAt}; null while there is none."""
    if prediction is None:
        return {"forecast": None}
    exhausts = prediction.exhausts_at_ms
    return {
        "forecast": {
            "burnRateUsdPerHour": usd(prediction.burn_nanos_per_hour),
            "exhaustsAt": None if exhausts is None else _time(exhausts),
        }
    }


def at_risk_observation(prediction: Forecast | None, *, was_at_risk: bool = False) -> Observation:
    """BudgetAtRisk: True when, at the recent rate, the budget runs out before it resets;
    `was_at_risk` (the condition as it stands) keeps it True while it runs out near the
    reset (`Forecast.near_reset`)."""
    if prediction is None:
        return Observation("BudgetAtRisk", "False", "NoForecast", "not enough spend history yet")
    rate = f"at {usd(prediction.burn_nanos_per_hour):g} USD/h"
    resets = (
        "never resets"
        if prediction.window.end_ms == NEVER
        else f"resets at {_time(prediction.window.end_ms)}"
    )
    if prediction.left_nanos is None:
        return Observation("BudgetAtRisk", "False", "NoBudget", f"{rate}; no maxBudget applies")
    if prediction.left_nanos == 0:
        return Observation(
            "BudgetAtRisk", "False", "AlreadyExhausted", f"{rate}; see BudgetExceeded"
        )
    if prediction.exhausts_at_ms is None:
        return Observation("BudgetAtRisk", "False", "NotSpending", f"nothing spent; it {resets}")
    runs_out = f"{rate} the budget runs out at {_time(prediction.exhausts_at_ms)}"
    if was_at_risk and not prediction.at_risk and prediction.near_reset:
        return Observation(
            "BudgetAtRisk",
            "True",
            "ExhaustsNearReset",
            f"{runs_out}, just after it {resets}: at risk until it lasts well past the reset",
        )
    return Observation.of(
        "BudgetAtRisk",
        holds=prediction.at_risk,
        reason="ExhaustsBeforeReset" if prediction.at_risk else "LastsUntilReset",
        message=f"{runs_out}; it {resets}",
    )
