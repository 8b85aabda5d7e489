"""The quality self-check re-creates real frames from their neighbours, within its cost budget."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from infiniteflow_common.domain import JobStatus
from infiniteflow_common.media import decode_video
from infiniteflow_common.timing import Slot
from services.gpu_interp.chunk_work import interpolate_chunk
from services.gpu_interp.engines.base import Frames, InterpolationEngine
from services.gpu_interp.engines.flow import FlowEngine
from services.gpu_interp.quality import (
    PSNR_CAP_DB,
    psnr_db,
    sample_count,
    sample_frames,
    self_check,
    ssim,
)
from services.muxer.report import ChunkScore, final_status, quality_report
from tests.support.clips import LosslessWriter, textured


class Blend(InterpolationEngine):
    """The weighted average of the two frames, and a record of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[Fraction, ...]]] = []

    def _interpolate_times(self, first: Frames, second: Frames, times: Sequence[Fraction]) -> list[Frames]:
        self.calls.append((len(first), tuple(times)))
        return [(first * (1 - float(t)) + second * float(t)).round().astype(first.dtype) for t in times]


def test_a_chunk_needs_three_frames_and_enough_work_to_be_checked() -> None:
    assert sample_count(2, 1, budget=1.0, max_samples=3) == 0, "no frame has two neighbours"
    assert sample_count(10, 9, budget=0.04, max_samples=3) == 0, "one sample would cost 11 %"
    assert sample_count(48, 47, budget=0.04, max_samples=3) == 1
    assert sample_count(120, 119, budget=0.04, max_samples=3) == 3, "capped at max_samples"
    assert sample_count(5, 400, budget=0.04, max_samples=9) == 3, "only frames 1..3 have both neighbours"


def test_sampled_frames_are_spread_evenly_and_keep_both_neighbours() -> None:
    assert sample_frames(3, 1) == (1,)
    assert sample_frames(48, 1) == (24,)
    assert sample_frames(48, 3) == (8, 24, 39)
    for count in range(3, 60):
        for samples in range(1, 4):
            picks = sample_frames(count, samples)
            assert all(1 <= i <= count - 2 for i in picks)


def test_scores_of_identical_and_different_frames() -> None:
    image = textured(64, 48)
    assert psnr_db(image, image) == PSNR_CAP_DB
    assert ssim(image, image) == pytest.approx(1.0)
    noisy = np.clip(image.astype(int) + np.random.default_rng(1).integers(-20, 21, image.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    assert 20 < psnr_db(image, noisy) < 30
    assert 0.3 < ssim(image, noisy) < 0.95
    assert ssim(image, 255 - image) < 0.1
    deep = image.astype(np.uint16) * 257
    assert psnr_db(deep, deep // 257 * 257) == PSNR_CAP_DB
    assert ssim(deep, noisy.astype(np.uint16) * 257) == pytest.approx(ssim(image, noisy), abs=1e-6)


def test_the_check_scores_what_the_engine_made_against_the_real_frame() -> None:
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 100, 100, 60, 200)]
    quality = self_check(Blend(), lambda i: frames[i], [1, 3], batch_size=4)
    assert quality is not None
    assert quality.samples == 2
    assert quality.frames == (1, 3)
    # frame 1 re-made as (0 + 100) / 2 = 50 against 100; frame 3 as (100 + 200) / 2 = 150 against 60
    expected = (
        psnr_db(frames[1], np.full_like(frames[1], 50)) + psnr_db(frames[3], np.full_like(frames[3], 150))
    ) / 2
    assert quality.psnr_db == pytest.approx(expected)
    assert self_check(Blend(), lambda i: frames[i], [], batch_size=4) is None


def test_smooth_motion_scores_high_with_the_flow_engine() -> None:
    strip = textured(160 + 40, 64, seed=3)
    frames = [strip[:, 4 * i : 4 * i + 160] for i in range(5)]
    quality = self_check(FlowEngine(), lambda i: frames[i], [2], batch_size=2)
    assert quality is not None
    assert quality.psnr_db > 30
    assert quality.ssim > 0.9


@pytest.mark.ffmpeg
def test_a_chunk_long_enough_is_checked_and_the_check_is_one_extra_pair(tmp_path: Path) -> None:
    strip = textured(64 + 100, 32, seed=5)
    with LosslessWriter(tmp_path / "in.mkv", width=64, height=32, pix_fmt="yuv444p", rate=Fraction(25)) as w:
        for i in range(50):
            w.write_rgb(np.ascontiguousarray(strip[:, 2 * i : 2 * i + 64]))
    slots = [Slot(i, Fraction(k, 2)) for i in range(49) for k in range(2)]
    slots.append(Slot(49, Fraction(0)))
    engine = Blend()
    with LosslessWriter(
        tmp_path / "out.mkv", width=64, height=32, pix_fmt="yuv444p", rate=Fraction(50)
    ) as out:
        outcome = interpolate_chunk(
            engine, decode_video(tmp_path / "in.mkv"), out, slots,
            expected_frames=50, batch_size=8, quality_budget=0.04, quality_samples=3,
        )  # fmt: skip
    assert outcome.frames_out == 99
    assert outcome.quality is not None
    assert outcome.quality.samples == 1, "49 pairs × 4 % affords one re-created frame"
    assert outcome.quality.frames == (25,)
    assert engine.calls[-1] == (1, (Fraction(1, 2),))
    assert sum(n for n, _ in engine.calls[:-1]) == 49


def test_the_job_score_is_the_mean_and_names_the_worst_and_low_chunks() -> None:
    scores = [
        ChunkScore(0, 35.0, 0.97),
        ChunkScore(1, None, None),
        ChunkScore(2, 19.0, 0.6),
        ChunkScore(3, 30.0, 0.92),
        ChunkScore(4, 21.5, 0.7),
    ]
    report = quality_report(scores, floor_db=22.0)
    assert report is not None
    assert report.psnr_db == pytest.approx((35 + 19 + 30 + 21.5) / 4)
    assert report.ssim == pytest.approx((0.97 + 0.6 + 0.92 + 0.7) / 4)
    assert report.chunks_checked == 4
    assert (report.worst_chunk_index, report.worst_chunk_psnr_db) == (2, 19.0)
    assert report.chunks_below_floor == (2, 4)
    assert final_status(report) is JobStatus.COMPLETED_WITH_WARNINGS
    fine = quality_report(scores, floor_db=15.0)
    assert fine is not None
    assert fine.chunks_below_floor == ()
    assert final_status(fine) is JobStatus.COMPLETED


def test_a_job_without_checked_chunks_has_no_score_and_no_warning() -> None:
    assert quality_report([ChunkScore(0, None, None)], floor_db=22.0) is None
    assert final_status(None) is JobStatus.COMPLETED


def test_the_report_names_each_chunks_model_and_how_it_was_chosen() -> None:
    from services.muxer.report import model_report

    scores = [
        ChunkScore(2, 30.0, 0.9, "v4.25", None),
        ChunkScore(0, 31.0, 0.9, "hdv3", {"hdv3": 31.0, "v4.25": 30.2}),
        ChunkScore(1, None, None, None, None),  # an older worker's chunk: model unknown
    ]
    counts, chunks = model_report(scores, "auto")
    assert counts == {"hdv3": 1, "v4.25": 1}
    assert [(c.chunk_index, c.model, c.chosen_by) for c in chunks] == [
        (0, "hdv3", "check"),
        (2, "v4.25", "rule"),
    ]
    assert chunks[0].scores == {"hdv3": 31.0, "v4.25": 30.2}
    _, named = model_report(scores, "hdv3")
    assert {c.chosen_by for c in named} == {"job"}
    report = quality_report(scores, floor_db=20.0)
    assert report is not None
    assert report.model_chunks == counts
