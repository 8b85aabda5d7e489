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
class Slot:
    """One output frame: `t` of the way from source frame `source_index` to the next (0 = a copy)."""

    source_index: int
    t: Fraction


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk: source frames [first_frame, first_frame + frame_count), output slots in order."""

    index: int
    first_frame: int
    frame_count: int
    shares_last_frame: bool
    ends_scene: bool
    first_output_frame: int
    slots: tuple[Slot, ...]

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
    """
    if source_frames < 2:
        raise PlanError(f"{source_frames} frame(s): at least two are needed to interpolate")
    if max_frames < 2:
        raise PlanError("chunks need room for at least two frames")
    starts = sorted({s for s in scene_starts if 0 < s < source_frames})
    scene_bounds = list(zip([0, *starts], [*starts, source_frames], strict=True))
    # [begin, end) of each chunk's own frames, and whether it shares its last frame with the next chunk
    ranges: list[tuple[int, int, bool]] = []
    for begin, end in scene_bounds:
        for own_begin, own_end in _balanced(begin, end, max_frames):
            ranges.append((own_begin, own_end, own_end < end))
    if positions is None:
        all_slots = timing.plan(source_frames, in_rate, out_rate)
    else:
        all_slots = timing.plan_at(positions, input_frames or source_frames, in_rate, out_rate)
    last_of_scene = {end - 1 for _, end in scene_bounds}
    chunks: list[ChunkPlan] = []
    position = 0
    for index, (begin, end, shares) in enumerate(ranges):
        mine: list[Slot] = []
        while position < len(all_slots) and all_slots[position].index < end:
            slot = all_slots[position]
            t = Fraction(0) if slot.index in last_of_scene else slot.t  # never blend across a cut
            mine.append(Slot(slot.index - begin, t))
            position += 1
        chunks.append(
            ChunkPlan(
                index=index,
                first_frame=begin,
                frame_count=end - begin + (1 if shares else 0),
                shares_last_frame=shares,
                ends_scene=not shares,
                first_output_frame=position - len(mine),
                slots=tuple(mine),
            )
        )
    return JobPlan(
        in_rate=in_rate,
        out_rate=out_rate,
        source_frames=source_frames,
        out_frames=len(all_slots),
        scene_starts=tuple(starts),
        chunks=tuple(chunks),
        input_frames=input_frames,
    )


def _balanced(begin: int, end: int, max_frames: int) -> list[tuple[int, int]]:
    """[begin, end) of each chunk's own frames in one scene: as few chunks as fit, of even length.

    Inside a scene a chunk owns at most max_frames − 1 frames plus the next chunk's first; the scene's
    last chunk owns up to max_frames. Even lengths keep the last chunk from being a sliver that costs
    a source open and an encoder start for a few frames, and end a job's chunks at the same time.
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
