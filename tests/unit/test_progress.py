"""A job's progress bar: each stage's point, and interpolation filling the span between split and assembly."""

from __future__ import annotations

from infiniteflow_common.progress import JobProgress, chunks_progress


def test_the_stages_move_the_bar_forward_in_pipeline_order() -> None:
    order = [
        JobProgress.STARTED,
        JobProgress.SPLITTING,
        JobProgress.SPLIT,
        JobProgress.INTERPOLATED,
        JobProgress.DONE,
    ]
    assert order == sorted(order)
    assert JobProgress.DONE == 100


def test_chunks_done_fill_the_span_from_the_split_to_the_assembly_and_never_past_it() -> None:
    bars = [chunks_progress(done, 7) for done in range(8)]
    assert bars[0] == JobProgress.SPLIT
    assert bars[-1] == JobProgress.INTERPOLATED
    assert bars == sorted(bars)
    assert chunks_progress(9, 7) == JobProgress.INTERPOLATED, "a replayed count cannot overshoot"
    assert chunks_progress(0, 0) == JobProgress.SPLIT
