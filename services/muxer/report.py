"""What a finished job reports about itself: the quality summary and the timing report (pure logic).

The quality summary aggregates the chunks' self-check scores: the job's score is the mean of the
checked chunks, its worst chunk is the lowest PSNR, and every checked chunk below the configured floor
is named, which makes the job `completed_with_warnings`.

The timing report puts the split's plan (rates, scene cuts, whether VFR input was made constant)
next to what ffprobe measures in the output file (frames, durations, the audio's drift).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from infiniteflow_common.db import JobStatus
from infiniteflow_common.events import JobSplit, QualityReport, TimingReport
from services.muxer.assemble import OutputTiming


@dataclass(frozen=True)
class ChunkScore:
    """One chunk's self-check score (None: the chunk was not checked)."""

    index: int
    psnr_db: float | None
    ssim: float | None


def quality_report(scores: Iterable[ChunkScore], floor_db: float) -> QualityReport | None:
    """The job's quality summary, or None when no chunk was checked."""
    checked = [(s.index, s.psnr_db, s.ssim) for s in scores if s.psnr_db is not None]
    if not checked:
        return None
    ssims = [ssim for _, _, ssim in checked if ssim is not None]
    worst_index, worst_psnr, _ = min(checked, key=lambda c: (c[1], c[0]))
    return QualityReport(
        psnr_db=sum(psnr for _, psnr, _ in checked) / len(checked),
        ssim=sum(ssims) / len(ssims) if ssims else None,
        chunks_checked=len(checked),
        worst_chunk_index=worst_index,
        worst_chunk_psnr_db=worst_psnr,
        psnr_floor_db=floor_db,
        chunks_below_floor=tuple(sorted(index for index, psnr, _ in checked if psnr < floor_db)),
    )


def final_status(quality: QualityReport | None) -> JobStatus:
    """`completed_with_warnings` when a checked chunk is below the floor, else `completed`."""
    if quality is not None and quality.chunks_below_floor:
        return JobStatus.COMPLETED_WITH_WARNINGS
    return JobStatus.COMPLETED


def timing_report(split: JobSplit, *, input_vfr: bool, measured: OutputTiming) -> TimingReport:
    """The job's timing: planned input rate, frames and cuts, and the output as measured."""
    in_rate = Fraction(split.in_fps_num, split.in_fps_den)
    cuts = [int(frame) for frame in split.scene_cuts]
    frames = int(split.source_frame_count)
    duration = Fraction(frames) / in_rate
    times = [frame / in_rate for frame in cuts]
    if split.vfr_kept and split.vfr_pts:  # variable rate kept: the input's own timestamps
        tick, pts = Fraction(split.vfr_time_base_num, split.vfr_time_base_den), list(split.vfr_pts)
        last = pts[-1] - pts[-2] if len(pts) > 1 else 0
        duration = (pts[-1] + last) * tick
        times = [pts[frame] * tick for frame in cuts]
    return TimingReport(
        input_vfr=input_vfr,
        vfr_converted=split.vfr_converted,
        in_duration_s=float(duration),
        out_duration_s=measured.video_duration_s,
        out_frames_measured=measured.video_frames,
        audio_duration_s=measured.audio_duration_s,
        audio_video_drift_s=measured.drift_s,
        scene_cut_frames=tuple(cuts),
        scene_cut_times_s=tuple(float(time) for time in times),
    )
