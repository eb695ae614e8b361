"""The time zones and times the calendar-window tests run over (Python's arithmetic and
the Lua's alike), so both hold the same hard cases."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["ZONED_TIMES", "ZONES"]

# Zones with daylight saving on either hemisphere, half-hour and 45-minute offsets,
# changes at midnight (Santiago, Havana), a skipped day (Apia, 2011-12-30), a 14-hour
# offset (Kiritimati) and none at all.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "America/Havana",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
)
ZONED_TIMES = st.integers(min_value=631_152_000_000, max_value=2_840_140_800_000)
"""1990 .. 2060 in epoch ms: the zone data's rules, past and projected."""
