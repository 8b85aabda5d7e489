"""Variable-frame-rate timing becomes constant at the source's average rate, keeping its duration."""

from __future__ import annotations

from fractions import Fraction

from services.splitter.cfr import average_rate, cfr_sources, is_variable


def test_constant_timestamps_are_not_variable() -> None:
    assert not is_variable([Fraction(i, 30) for i in range(30)])


def test_a_phone_recording_snaps_to_the_standard_rate_it_approximates() -> None:
    jitter = [Fraction(i * 1001, 30000) + Fraction((i % 3) - 1, 10_000) for i in range(300)]
    assert is_variable(jitter, tolerance=Fraction(1, 100_000))
    assert average_rate(jitter) == Fraction(30000, 1001)


def test_frames_land_in_their_nearest_slot_gaps_repeat_the_previous_frame() -> None:
    # 30 fps for 4 frames, then a frame every 2/30 s
    stamps = [Fraction(i, 30) for i in range(4)] + [Fraction(3 + 2 * k, 30) for k in range(1, 4)]
    assert cfr_sources(stamps, Fraction(30)) == [0, 1, 2, 3, 3, 4, 4, 5, 5, 6]


def test_an_uneven_source_keeps_its_duration_at_its_average_rate() -> None:
    stamps = [Fraction(i, 30) for i in range(15)] + [Fraction(15 + 2 * k, 30) for k in range(22)]
    rate = average_rate(stamps)
    frames = cfr_sources(stamps, rate)
    span = stamps[-1] - stamps[0]
    assert abs(Fraction(len(frames)) / rate - (span + span / (len(stamps) - 1))) < 1 / rate
