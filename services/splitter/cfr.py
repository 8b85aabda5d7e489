"""Variable-frame-rate input → constant frame rate at its average rate (like FFmpeg's fps filter)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction


def cfr_sources(timestamps: Sequence[Fraction], rate: Fraction) -> list[int]:
    """For each CFR output frame, the index of the source frame shown then.

    Each source frame lands in the slot nearest its timestamp; a later frame in the same slot
    replaces an earlier one (dropped), an empty slot repeats the previous frame (duplicated).
    """
    if not timestamps:
        return []
    start = timestamps[0]
    count = round((timestamps[-1] - start) * rate) + 1
    slots: list[int | None] = [None] * count
    for index, ts in enumerate(timestamps):
        slot = round((ts - start) * rate)
        if 0 <= slot < count:
            slots[slot] = index
    filled: list[int] = []
    for slot_source in slots:
        filled.append(slot_source if slot_source is not None else (filled[-1] if filled else 0))
    return filled


def is_variable(timestamps: Sequence[Fraction], tolerance: Fraction = Fraction(1, 1000)) -> bool:
    """Whether the frame intervals differ by more than `tolerance` seconds."""
    deltas = [b - a for a, b in itertools.pairwise(timestamps)]
    return bool(deltas) and max(deltas) - min(deltas) > tolerance


# Rates a VFR source is snapped to when its average is within SNAP_TOLERANCE of one of them.
STANDARD_RATES = tuple(
    Fraction(r)
    for r in (
        "24000/1001",
        "24",
        "25",
        "30000/1001",
        "30",
        "48",
        "50",
        "60000/1001",
        "60",
        "90",
        "100",
        "120",
    )
)
SNAP_TOLERANCE = Fraction(1, 200)


def average_rate(timestamps: Sequence[Fraction]) -> Fraction:
    """The average frame rate of a VFR source: (n − 1) intervals over its time span.

    Snapped to a standard rate within 0.5 % (a phone's 29.96 fps becomes 30000/1001), otherwise a
    fraction with a small denominator, so the output rate stays one a player shows sensibly.
    """
    span = timestamps[-1] - timestamps[0]
    if len(timestamps) < 2 or span <= 0:
        raise ValueError("an average rate needs two frames with distinct timestamps")
    rate = Fraction(len(timestamps) - 1) / span
    for standard in STANDARD_RATES:
        if abs(rate - standard) <= standard * SNAP_TOLERANCE:
            return standard
    return rate.limit_denominator(1000)
