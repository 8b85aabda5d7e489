"""Chunk plans keep timing exact, never blend across a cut, and meet seamlessly inside a scene."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infiniteflow_common import timing
from services.splitter.plan import ChunkStream, PlanError, plan_job

NTSC = Fraction(30000, 1001)


def _global_slots(plan):  # type: ignore[no-untyped-def]
    return [(c.first_frame + s.source_offset, s.t) for c in plan.chunks for s in c.slots]


def test_doubling_makes_two_output_frames_per_source_frame() -> None:
    plan = plan_job(10, Fraction(30), Fraction(60), [], max_frames=4)
    assert plan.out_frames == 20
    assert _global_slots(plan)[:4] == [(0, 0), (0, Fraction(1, 2)), (1, 0), (1, Fraction(1, 2))]
    assert _global_slots(plan)[-2:] == [(9, 0), (9, 0)], "the end repeats the last frame: duration kept"


def test_inside_a_scene_chunks_share_one_frame_and_output_it_once() -> None:
    plan = plan_job(10, Fraction(25), Fraction(50), [], max_frames=4)
    first, second = plan.chunks[:2]
    assert (first.first_frame, first.frame_count, first.shares_last_frame) == (0, 4, True)
    assert second.first_frame == 3, "chunk k+1 starts at chunk k's shared last frame"
    assert [s.source_offset for s in first.slots] == [0, 0, 1, 1, 2, 2]
    assert first.slots[-1].t == Fraction(1, 2), "the frames between chunks are interpolated"
    assert second.first_output_frame == len(first.slots)


def test_no_slot_blends_across_a_scene_cut() -> None:
    plan = plan_job(12, Fraction(24), Fraction(96), [6], max_frames=50)
    assert len(plan.chunks) == 2
    assert plan.chunks[0].ends_scene
    assert not plan.chunks[0].shares_last_frame
    tail = [s for s in plan.chunks[0].slots if s.source_offset == 5]
    assert [s.t for s in tail] == [0, 0, 0, 0], "slots after the scene's last frame repeat it"


@given(
    frames=st.integers(2, 300),
    cuts=st.lists(st.integers(1, 299), max_size=6),
    max_frames=st.integers(2, 40),
    rate=st.sampled_from(
        [
            (Fraction(24000, 1001), Fraction(60)),
            (Fraction(25), Fraction(50)),
            (NTSC, Fraction(60000, 1001)),
            (Fraction(30), Fraction(240)),
            (Fraction(24), Fraction(60)),
        ]
    ),
)
def test_chunks_cover_every_output_frame_once_in_order(
    frames: int, cuts: list[int], max_frames: int, rate
) -> None:  # type: ignore[no-untyped-def]
    in_rate, out_rate = rate
    plan = plan_job(frames, in_rate, out_rate, cuts, max_frames)
    positions = [j * in_rate / out_rate for j in range(plan.out_frames)]
    got = _global_slots(plan)
    assert len(got) == plan.out_frames
    scene_last = {s - 1 for s in plan.scene_starts} | {frames - 1}
    for (index, t), p in zip(got, positions, strict=True):
        expected_index = min(int(p), frames - 1)
        assert index == expected_index
        assert t == (0 if index in scene_last else p - index)
    assert sum(c.own_frames for c in plan.chunks) == frames
    for chunk in plan.chunks:
        assert chunk.frame_count <= max_frames
        assert all(s.source_offset + (1 if s.t else 0) < chunk.frame_count for s in chunk.slots)
    # output duration equals input duration to within one output frame
    assert abs(Fraction(plan.out_frames) / out_rate - Fraction(frames) / in_rate) < 1 / out_rate


def test_a_single_frame_cannot_be_interpolated() -> None:
    with pytest.raises(PlanError):
        plan_job(1, Fraction(30), Fraction(60), [], max_frames=10)


def test_a_long_scene_is_cut_into_full_chunks_and_its_end_into_two_even_ones_with_no_sliver() -> None:
    # 228 frames, at most 57 per chunk: 56 + 56 + 56 + 56 + 4 would leave a 4-frame chunk
    plan = plan_job(228, Fraction(30), Fraction(60), [], max_frames=57)
    owned = [c.frame_count - (1 if c.shares_last_frame else 0) for c in plan.chunks]
    assert owned == [56, 56, 56, 30, 30]
    assert all(c.frame_count <= 57 for c in plan.chunks)


@given(st.integers(2, 400), st.integers(2, 60))
def test_chunks_never_exceed_their_size_nor_are_slivers_and_a_scene_never_needs_more_than_a_greedy_cut(
    frames: int, max_frames: int
) -> None:
    plan = plan_job(frames, Fraction(24), Fraction(48), [], max_frames=max_frames)
    assert all(c.frame_count <= max_frames for c in plan.chunks)
    owned = [c.frame_count - (1 if c.shares_last_frame else 0) for c in plan.chunks]
    if len(owned) > 1:
        assert min(owned) >= max_frames // 2, "the end of a scene is split evenly, never a sliver"
    greedy = 1 if frames <= max_frames else 1 + -(-(frames - max_frames) // (max_frames - 1))
    assert len(plan.chunks) <= greedy


@given(
    frames=st.integers(2, 400),
    cuts=st.lists(st.integers(1, 399), max_size=6),
    max_frames=st.integers(2, 40),
    steps=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    rate=st.sampled_from(
        [(Fraction(24000, 1001), Fraction(60)), (Fraction(25), Fraction(50)), (Fraction(24), Fraction(60))]
    ),
)
def test_a_plan_streamed_while_the_source_is_read_is_the_plan_of_the_whole_pass(
    frames: int, cuts: list[int], max_frames: int, steps: list[int], rate: tuple[Fraction, Fraction]
) -> None:
    in_rate, out_rate = rate
    whole = plan_job(frames, in_rate, out_rate, cuts, max_frames)
    stream = ChunkStream(in_rate, out_rate, max_frames)
    streamed, known = [], 0
    for step in steps:
        known = min(frames, known + step)
        # the pass knows a cut only once it has seen the frame that starts it
        streamed += stream.advance(known, [c for c in cuts if c < known])
    streamed += stream.finish(frames, cuts, timing.plan(frames, in_rate, out_rate))
    assert streamed == list(whole.chunks)
    assert stream.scene_starts == whole.scene_starts


def test_a_long_scene_streams_a_chunk_as_soon_as_two_chunks_of_frames_follow_its_start() -> None:
    stream = ChunkStream(Fraction(30), Fraction(60), max_frames=10)
    assert stream.advance(19, []) == []
    [first] = stream.advance(20, [])
    assert (first.first_frame, first.frame_count, first.shares_last_frame) == (0, 10, True)
    assert [chunk.first_frame for chunk in stream.advance(40, [])] == [9, 18]
