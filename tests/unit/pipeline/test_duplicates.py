"""Duplicated source frames are skipped: the in-between frames follow the real motion, timing unchanged."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from infiniteflow_common import timing
from services.splitter.duplicates import DuplicateDetector, kept_frames, kept_scene_starts
from services.splitter.plan import plan_job
from tests.support.clips import textured


def test_with_every_frame_kept_the_plan_is_the_usual_one() -> None:
    for in_rate, out_rate in ((Fraction(30), Fraction(60)), (Fraction(24000, 1001), Fraction(60))):
        positions = [Fraction(i) for i in range(17)]
        assert timing.plan_at(positions, 17, in_rate, out_rate) == timing.plan(17, in_rate, out_rate)


def test_a_held_frame_is_interpolated_across_its_whole_gap() -> None:
    # 15 fps motion in a 30 fps stream: frames 1, 3, 5 repeat 0, 2, 4; ×2 output at 60 fps
    slots = timing.plan_at([Fraction(0), Fraction(2), Fraction(4)], 6, Fraction(30), Fraction(60))
    assert len(slots) == 12, "as many output frames as without skipping"
    assert [(s.source_offset, s.t) for s in slots[:8]] == [
        (0, Fraction(0)), (0, Fraction(1, 4)), (0, Fraction(1, 2)), (0, Fraction(3, 4)),
        (1, Fraction(0)), (1, Fraction(1, 4)), (1, Fraction(1, 2)), (1, Fraction(3, 4)),
    ]  # fmt: skip
    assert all((s.source_offset, s.t) == (2, 0) for s in slots[8:]), "after the last distinct frame it holds"


def test_repeats_and_near_repeats_are_found_real_motion_is_not() -> None:
    strip = textured(80, 48, seed=2)
    frames = [strip[:, 0:64], strip[:, 0:64], strip[:, 1:65], strip[:, 1:65], strip[:, 2:66]]
    noisy = np.clip(frames[4].astype(int) + np.random.default_rng(0).integers(-1, 2, frames[4].shape), 0, 255)
    frames.append(noisy.astype(np.uint8))
    detector = DuplicateDetector(threshold=1.0)
    for frame in frames:
        detector.feed(np.ascontiguousarray(frame[..., ::-1]))
    assert detector.distinct == [True, False, True, False, True, False]


def test_kept_frames_skip_duplicates_and_cfr_repeats_and_scene_starts_follow() -> None:
    distinct = [True, False, True, True, False, True]
    assert kept_frames([0, 1, 2, 3, 4, 5], distinct) == [0, 2, 3, 5]
    assert kept_frames([0, 0, 1, 2, 2, 3], distinct) == [0, 3, 5], "a CFR repeat is a duplicate too"
    assert kept_scene_starts([3, 5], [0, 2, 3, 5]) == [2, 3]
    assert kept_scene_starts([4], [0, 2, 3, 5]) == [3], "a start on a skipped frame moves to the next kept"


def test_the_job_plan_counts_every_input_frame_and_chunks_the_kept_ones() -> None:
    kept = [Fraction(2 * i) for i in range(30)]  # 60 frames, every other one a repeat
    plan = plan_job(30, Fraction(30), Fraction(60), [15], 8, positions=kept, input_frames=60)
    assert plan.out_frames == 120
    assert plan.input_frames == 60
    assert sum(len(c.slots) for c in plan.chunks) == 120
    assert plan.scene_starts == (15,)
    ends = [c for c in plan.chunks if c.ends_scene]
    assert [c.first_frame + c.frame_count for c in ends] == [15, 30], "no chunk crosses the cut"
    # the kept frame before the cut holds through its own gap: nothing blends the two scenes
    before_cut = [s for c in plan.chunks for s in c.slots if c.first_frame + s.source_offset == 14]
    assert [s.t for s in before_cut] == [0, 0, 0, 0]
