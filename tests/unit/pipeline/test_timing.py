"""Rate changes are planned in exact rational arithmetic: no drift, exact output rates."""

from __future__ import annotations

from fractions import Fraction

import pytest

from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.timing import (
    Slot,
    multiplier_plan,
    output_count,
    output_rate,
    parse_rate,
    plan,
    times_between,
)


def test_doubling_puts_one_middle_frame_between_every_pair() -> None:
    assert multiplier_plan(3, 2) == [
        Slot(0, Fraction(0)),
        Slot(0, Fraction(1, 2)),
        Slot(1, Fraction(0)),
        Slot(1, Fraction(1, 2)),
        Slot(2, Fraction(0)),
        Slot(2, Fraction(0)),  # past the last frame: held
    ]


@pytest.mark.parametrize("multiplier", [2, 4, 8])
def test_a_power_of_two_multiplier_uses_evenly_spaced_dyadic_times(multiplier: int) -> None:
    slots = multiplier_plan(10, multiplier)
    assert len(slots) == 10 * multiplier
    assert [s.t for s in slots[:multiplier]] == [Fraction(k, multiplier) for k in range(multiplier)]


def test_24_to_60_cycles_through_fifths_without_drift() -> None:
    slots = plan(1000, Fraction(24), Fraction(60))
    assert [s.t for s in slots[:5]] == [Fraction(k, 5) for k in (0, 2, 4, 1, 3)]
    assert slots[2 * 500] == Slot(400, Fraction(0))  # 500 output frames later: exactly source frame 400


def test_ntsc_film_to_60_lands_on_exact_rational_times() -> None:
    slots = plan(24000, Fraction(24000, 1001), Fraction(60))
    assert slots[1] == Slot(0, Fraction(400, 1001))
    assert all(0 <= s.t < 1 for s in slots)
    # 1001 s of film (24000 frames) make exactly 60060 frames at 60 fps.
    assert len(slots) == output_count(24000, Fraction(24000, 1001), Fraction(60)) == 60060


def test_25_to_50_and_ntsc_doubling_are_exact_multiples() -> None:
    assert output_rate(Fraction(25), multiplier=2) == 50
    assert output_rate(Fraction(24000, 1001), multiplier=2) == Fraction(48000, 1001)
    assert plan(4, Fraction(30000, 1001), Fraction(60000, 1001)) == multiplier_plan(4, 2)


def test_rates_are_read_exactly_from_common_spellings() -> None:
    assert parse_rate("60000/1001") == Fraction(60000, 1001)
    assert parse_rate("29.97") == Fraction(30000, 1001)
    assert parse_rate(60) == 60
    with pytest.raises(InfiniteFlowError) as err:
        parse_rate("fast")
    assert err.value.code == "E_BAD_FRAME_RATE"


def test_exactly_one_of_multiplier_and_fps_is_required() -> None:
    with pytest.raises(InfiniteFlowError):
        output_rate(Fraction(25), multiplier=2, fps=Fraction(60))
    with pytest.raises(InfiniteFlowError):
        output_rate(Fraction(25))


def test_each_pair_lists_the_distinct_times_it_needs() -> None:
    needed = times_between(plan(4, Fraction(24), Fraction(60)))
    fifths = [Fraction(k, 5) for k in range(5)]
    assert needed == {0: [fifths[2], fifths[4]], 1: [fifths[1], fifths[3]], 2: [fifths[2], fifths[4]]}
