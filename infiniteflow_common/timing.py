"""Which output frames a rate change needs, as exact rationals: (source index, t) per output frame.

Output frame k is shown at k / out_rate seconds. On the input's timeline that is position
p = k · in_rate / out_rate frames; it lies between source frames i = ⌊p⌋ and i + 1 at t = p − i.
With `Fraction` there is no drift: 24 → 60 gives t = 0, 2/5, 4/5, 1/5, 3/5 forever, 24000/1001 → 60
gives 0, 400/1001, 800/1001, 199/1001, …, and ×2 of 24000/1001 is exactly 48000/1001. The output lasts as long as the input: ⌈n · out / in⌉
frames, the ones past the last source frame repeating it (there is nothing to interpolate towards).
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.events import OutputSlot

MULTIPLIERS = (2, 4, 8)
# Common rates as written by users and by container metadata.
NAMED_RATES = {
    "23.976": Fraction(24000, 1001),
    "29.97": Fraction(30000, 1001),
    "59.94": Fraction(60000, 1001),
    "119.88": Fraction(120000, 1001),
}


@dataclass(frozen=True, order=True)
class Slot:
    """One output frame: source frame `source_offset` moved `t` (0 ≤ t < 1) of the way to the next.

    The offset counts from the first source frame of what the slot is planned over: the whole clip
    (`plan`) or one chunk (`ChunkReady.timesteps`). `t` is exact; the wire form (`OutputSlot`, in
    `chunk.ready`) carries it as a float, and `from_wire` gets the fraction back.
    """

    source_offset: int
    t: Fraction

    @property
    def is_source(self) -> bool:
        """True when the output is a source frame itself (no interpolation)."""
        return self.t == 0

    def to_wire(self) -> OutputSlot:
        """The slot as `chunk.ready` carries it."""
        return OutputSlot(source_offset=self.source_offset, t=float(self.t))

    @classmethod
    def from_wire(cls, wire: OutputSlot) -> Slot:
        """The slot a `chunk.ready` timestep stands for, its `t` exact again (`exact_t`)."""
        return cls(wire.source_offset, exact_t(wire.t))


def exact_t(value: float) -> Fraction:
    """The rational timestep a float on the wire stands for (denominators stay small)."""
    return Fraction(value).limit_denominator(1 << 16)


def parse_rate(text: str | int | float | Fraction) -> Fraction:
    """A frame rate from `60`, `"60000/1001"`, `"29.97"` (the NTSC rates are read as their exact value)."""
    if isinstance(text, Fraction):
        rate = text
    elif isinstance(text, int):
        rate = Fraction(text)
    else:
        s = str(text).strip()
        try:
            rate = NAMED_RATES.get(s) or Fraction(s)
        except (ValueError, ZeroDivisionError) as exc:
            raise InfiniteFlowError(f"not a frame rate: {text!r}", code="E_BAD_FRAME_RATE") from exc
    if rate <= 0:
        raise InfiniteFlowError(f"frame rate must be positive, got {text!r}", code="E_BAD_FRAME_RATE")
    return rate


def output_rate(in_rate: Fraction, *, multiplier: int | None = None, fps: Fraction | None = None) -> Fraction:
    """The exact output rate: `in_rate × multiplier`, or `fps` (exactly one of them)."""
    if (multiplier is None) == (fps is None):
        raise InfiniteFlowError("give either a multiplier or a target fps", code="E_BAD_FRAME_RATE")
    if multiplier is not None:
        if multiplier < 1:
            raise InfiniteFlowError(f"multiplier must be ≥ 1, got {multiplier}", code="E_BAD_FRAME_RATE")
        return in_rate * multiplier
    assert fps is not None
    return parse_rate(fps)


def output_count(n_frames: int, in_rate: Fraction, out_rate: Fraction) -> int:
    """How many output frames cover the input's duration (n / in_rate seconds)."""
    return -((-n_frames * out_rate) // in_rate)  # ceiling, exact


def plan(n_frames: int, in_rate: Fraction, out_rate: Fraction) -> list[Slot]:
    """Every output frame of a clip of `n_frames` as a `Slot`, in display order."""
    if n_frames < 1:
        return []
    step = in_rate / out_rate  # source frames per output frame
    slots = []
    for k in range(output_count(n_frames, in_rate, out_rate)):
        position = k * step
        index = position.numerator // position.denominator
        t = position - index
        if index >= n_frames - 1:  # at or past the last source frame: hold it
            index, t = n_frames - 1, Fraction(0)
        slots.append(Slot(index, t))
    return slots


def plan_at(
    positions: Sequence[Fraction], total_frames: int, in_rate: Fraction, out_rate: Fraction
) -> list[Slot]:
    """`plan` when only some source frames are kept, at `positions` on the source timeline (in frames).

    Frame j of the kept ones sits at `positions[j]` (ascending, the first at 0); the output still
    covers all `total_frames`. Output frame k, at position p = k · in_rate / out_rate, lies between
    kept frames j and j + 1 at t = (p − positions[j]) / (positions[j + 1] − positions[j]); past the
    last kept frame it holds that one. With every frame kept (positions 0, 1, 2, …) this is `plan`.
    Used to skip duplicated frames: the in-between frames follow the real motion across the gap.
    """
    if not positions or total_frames < 1:
        return []
    step = in_rate / out_rate
    last = len(positions) - 1
    slots = []
    for k in range(output_count(total_frames, in_rate, out_rate)):
        position = k * step
        j = max(0, bisect_right(positions, position) - 1)
        if j >= last:
            slots.append(Slot(last, Fraction(0)))
            continue
        slots.append(Slot(j, (position - positions[j]) / (positions[j + 1] - positions[j])))
    return slots


def multiplier_plan(n_frames: int, multiplier: int) -> list[Slot]:
    """`plan` for an integer multiplier: t = 0, 1/m, …, (m−1)/m after each source frame."""
    return plan(n_frames, Fraction(1), Fraction(multiplier))


def times_between(slots: list[Slot]) -> dict[int, list[Fraction]]:
    """The distinct interpolated times each pair (offset, offset + 1) needs — an engine's work list."""
    needed: dict[int, list[Fraction]] = {}
    for slot in slots:
        if not slot.is_source and slot.t not in needed.setdefault(slot.source_offset, []):
            needed[slot.source_offset].append(slot.t)
    return needed


def times_after(index: int, in_rate: Fraction, out_rate: Fraction) -> list[Fraction]:
    """The t of every output frame in [index, index + 1) on the source timeline, in order.

    Streaming form of `plan`: a decoder that has frames `index` and `index + 1` in hand can emit
    these outputs without knowing the clip's length.
    """
    first = -((-index * out_rate) // in_rate)  # ⌈index · out / in⌉
    end = -((-(index + 1) * out_rate) // in_rate)
    return [k * in_rate / out_rate - index for k in range(first, end)]


RATE_TOLERANCE_S = Fraction(1, 1000)
"""Frame intervals that differ by no more than this are one constant rate (container rounding)."""


def packets_at_constant_rate(pts: Sequence[int | None], time_base: Fraction) -> bool:
    """Whether a stream's packet timestamps (in `time_base` ticks; None: a packet without one) are all
    there, distinct and evenly spaced: then its chunks can be planned while it is read (pure).

    Sorted first (B-frames arrive out of decode order). Ingest decides it while it counts the packets
    and sends it with the probe; the splitter checks for itself only when a producer did not.
    """
    if len(pts) < 2 or any(p is None for p in pts) or not time_base:
        return False
    ordered = sorted(p for p in pts if p is not None)
    if any(a == b for a, b in itertools.pairwise(ordered)):
        return False
    deltas = [(b - a) * time_base for a, b in itertools.pairwise(ordered)]
    return max(deltas) - min(deltas) <= RATE_TOLERANCE_S
