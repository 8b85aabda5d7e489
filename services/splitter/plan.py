"""Chunk planning: which source frames go in which chunk, and which output frame each chunk makes.

Pure logic, no I/O, exact rational time. Which output frame sits where comes from `infiniteflow_common.timing` (shared with the engines'
single-machine command). The rules added here (DESIGN.md):

* chunks never cross a scene cut, and hold at most `max_frames` source frames of their own;
* inside a scene, chunk k also carries the first frame of chunk k + 1 (`shares_last_frame`) so the
  frames between them can be interpolated; its output leaves that shared frame out;
* a slot whose left neighbour is the last frame of a scene (or of the video) has nothing to
  interpolate towards: it repeats that frame (t = 0), so no output frame blends two scenes and the
  timing stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from infiniteflow_common import timing
from infiniteflow_common.errors import InfiniteFlowError


class PlanError(InfiniteFlowError):
    """The requested output cannot be planned (bad rate, nothing to do)."""

    code = "E_PLAN_INVALID"


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk: source frames [first_frame, first_frame + frame_count), output slots in order."""

    index: int
    first_frame: int
    frame_count: int
    shares_last_frame: bool
    ends_scene: bool
    first_output_frame: int
    slots: tuple[timing.Slot, ...]

    @property
    def own_frames(self) -> int:
        """Source frames this chunk is responsible for (the shared trailing frame excluded)."""
        return self.frame_count - (1 if self.shares_last_frame else 0)


@dataclass(frozen=True)
class JobPlan:
    """The whole job: output rate and count, scene starts, and the chunks in order."""

    in_rate: Fraction
    out_rate: Fraction
    source_frames: int
    out_frames: int
    scene_starts: tuple[int, ...]
    chunks: tuple[ChunkPlan, ...]
    # The input's frame count when duplicates were skipped (source_frames counts the kept ones).
    input_frames: int | None = None


def plan_job(
    source_frames: int,
    in_rate: Fraction,
    out_rate: Fraction,
    scene_starts: Sequence[int],
    max_frames: int,
    *,
    positions: Sequence[Fraction] | None = None,
    input_frames: int | None = None,
) -> JobPlan:
    """Split a job into chunks. `scene_starts` are source indices where a new scene begins.

    With `positions`, the `source_frames` planned are the frames kept out of `input_frames` (the
    duplicates skipped), each at its position on the input's timeline; indices (scene starts,
    chunks) then count kept frames, and the output still covers the whole input.

    The same rules as a `ChunkStream` fed the whole pass at once: a plan streamed while the source
    is read is this plan.
    """
    if source_frames < 2:
        raise PlanError(f"{source_frames} frame(s): at least two are needed to interpolate")
    stream = ChunkStream(in_rate, out_rate, max_frames)
    if positions is None:
        all_slots = timing.plan(source_frames, in_rate, out_rate)
    else:
        all_slots = timing.plan_at(positions, input_frames or source_frames, in_rate, out_rate)
    chunks = stream.finish(source_frames, scene_starts, all_slots)
    return JobPlan(
        in_rate=in_rate,
        out_rate=out_rate,
        source_frames=source_frames,
        out_frames=len(all_slots),
        scene_starts=stream.scene_starts,
        chunks=tuple(chunks),
        input_frames=input_frames,
    )


class ChunkStream:
    """Chunks decided while the source is still being read, each as soon as nothing later can change it.

    A scene is cut into chunks of `max_frames − 1` own frames (plus the next chunk's first, shared)
    while more than two full chunks of it remain; its last `max_frames + 1 … 2 · max_frames − 1`
    frames are split into two chunks of even length, and a rest of up to `max_frames` is one chunk,
    so no chunk is a sliver. A full chunk is final once the pass has seen, with no cut, `2 · max_frames`
    frames from its start; the chunks that end a scene are final once its cut is known. Output slots
    of frames before the last one do not depend on the clip's length (`timing.plan`), so only the
    chunks decided by `finish` need it.
    """

    def __init__(self, in_rate: Fraction, out_rate: Fraction, max_frames: int) -> None:
        if max_frames < 2:
            raise PlanError("chunks need room for at least two frames")
        if in_rate <= 0 or out_rate <= 0:
            raise PlanError(f"rates must be positive (in {in_rate}, out {out_rate})")
        self.in_rate, self.out_rate, self.max_frames = in_rate, out_rate, max_frames
        self._step = in_rate / out_rate
        self._begin = 0  # first own frame of the next chunk
        self._next_slot = 0  # index of the next output frame
        self._index = 0  # index of the next chunk
        self._starts: list[int] = []

    @property
    def scene_starts(self) -> tuple[int, ...]:
        """Scene starts taken into the plan so far."""
        return tuple(self._starts)

    @property
    def chunks_decided(self) -> int:
        """How many chunks have been decided."""
        return self._index

    def advance(self, known: int, scene_starts: Sequence[int]) -> list[ChunkPlan]:
        """The chunks that became final now that frames [0, known) and every scene start before
        `known` (`scene_starts`, ascending, may include later ones) are known."""
        decided: list[ChunkPlan] = []
        for start in sorted({s for s in scene_starts if self._begin < s < known}):
            decided += self._scene(start, None)
            self._starts.append(start)
        full = self.max_frames - 1
        while known - self._begin >= 2 * self.max_frames:
            decided.append(self._chunk(self._begin, self._begin + full, shares=True, slots=None))
        return decided

    def finish(
        self, source_frames: int, scene_starts: Sequence[int], all_slots: Sequence[timing.Slot]
    ) -> list[ChunkPlan]:
        """The remaining chunks once the pass is over (`all_slots`: every output frame of the clip)."""
        if source_frames < 2:
            raise PlanError(f"{source_frames} frame(s): at least two are needed to interpolate")
        later = sorted({s for s in scene_starts if self._begin < s < source_frames})
        decided: list[ChunkPlan] = []
        for end in [*later, source_frames]:
            decided += self._scene(end, all_slots, last_frame=source_frames - 1)
        self._starts += later
        return decided

    def _scene(
        self, end: int, all_slots: Sequence[timing.Slot] | None, last_frame: int | None = None
    ) -> list[ChunkPlan]:
        """Every chunk of the rest of the scene that ends before frame `end` (all its frames known)."""
        decided: list[ChunkPlan] = []
        full = self.max_frames - 1
        while end - self._begin >= 2 * self.max_frames:
            decided.append(self._chunk(self._begin, self._begin + full, shares=True, slots=all_slots))
        # the scene's last frame (and the clip's) has nothing to interpolate towards: it is held
        hold = {end - 1} if last_frame is None else {end - 1, last_frame}
        for own_begin, own_end in _balanced(self._begin, end, self.max_frames):
            decided.append(self._chunk(own_begin, own_end, shares=own_end < end, slots=all_slots, hold=hold))
        return decided

    def _chunk(
        self,
        begin: int,
        end: int,
        *,
        shares: bool,
        slots: Sequence[timing.Slot] | None,
        hold: set[int] | None = None,
    ) -> ChunkPlan:
        """Chunk [begin, end) (+ the next frame when it `shares`) and the output frames it owns."""
        mine: list[timing.Slot] = []
        first_output = self._next_slot
        while True:
            if slots is not None:
                if self._next_slot >= len(slots) or slots[self._next_slot].source_offset >= end:
                    break
                index, t = slots[self._next_slot].source_offset, slots[self._next_slot].t
            else:
                position = self._next_slot * self._step
                index = position.numerator // position.denominator
                if index >= end:
                    break
                t = position - index
            if hold and index in hold:
                t = Fraction(0)  # never blend across a cut, nor past the last frame
            mine.append(timing.Slot(index - begin, t))
            self._next_slot += 1
        chunk = ChunkPlan(
            index=self._index,
            first_frame=begin,
            frame_count=end - begin + (1 if shares else 0),
            shares_last_frame=shares,
            ends_scene=not shares,
            first_output_frame=first_output,
            slots=tuple(mine),
        )
        self._index += 1
        self._begin = end
        return chunk


def _balanced(begin: int, end: int, max_frames: int) -> list[tuple[int, int]]:
    """[begin, end) of each chunk's own frames at the end of a scene: as few chunks as fit, of even length.

    Inside a scene a chunk owns at most max_frames − 1 frames plus the next chunk's first; the scene's
    last chunk owns up to max_frames. Even lengths keep the last chunk from being a sliver that costs
    a source open and an encoder start for a few frames.
    """
    length = end - begin
    count = max(1, -(-(length - 1) // (max_frames - 1)))
    base, extra = divmod(length, count)
    sizes = [base + (1 if k >= count - extra else 0) for k in range(count)]  # the extra frames go last
    bounds, cursor = [], begin
    for size in sizes:
        bounds.append((cursor, cursor + size))
        cursor += size
    return bounds


def frames_for_work(
    *,
    width: int,
    height: int,
    in_rate: Fraction,
    out_rate: Fraction,
    engine_pixels_per_s: float,
    target_s: float,
    min_frames: int,
    max_frames: int,
) -> int:
    """Source frames per chunk so that one chunk is about `target_s` seconds of engine work.

    The work of a source frame is the pixels of the frames interpolated after it: (out/in − 1) of
    them on average (×2: 1, ×8: 7, 24 → 60 fps: 1.5). A long clip of tiny frames becomes a handful of
    chunks; a 4K ×8 chunk stays short enough for its lease. At least a little work per frame is
    assumed, so a copy-only job (out rate = in rate) is not one endless chunk.
    """
    interpolated = max(Fraction(1, 10), out_rate / in_rate - 1)
    work = width * height * float(interpolated)
    frames = int(target_s * engine_pixels_per_s / max(1.0, work))
    return max(min_frames, min(max_frames, frames))
