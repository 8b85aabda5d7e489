"""What a finished job reports about itself: the quality summary and the timing report (pure logic).

The quality summary aggregates the chunks' self-check scores: the job's score is the mean of the
checked chunks, its worst chunk is the lowest PSNR, and every checked chunk below the configured floor
is named, which makes the job `completed_with_warnings`.

The timing report puts the job's plan (rates, scene cuts, whether VFR input was made constant)
next to what ffprobe measures in the output file (frames, durations, the audio's drift).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from infiniteflow_common.domain import JobResult, JobStatus, OutputVideo
from infiniteflow_common.events import ChunkModel, JobCompleted, JobSplit, QualityReport, TimingReport
from infiniteflow_common.output import OutputOptions
from infiniteflow_common.reports import rational, timing_view
from services.muxer.assemble import OutputTiming


@dataclass(frozen=True)
class ChunkScore:
    """One chunk's self-check score (None: the chunk was not checked), and the RIFE model it ran
    with with the scores of the models checked for it (None / empty: unknown or not chosen by check)."""

    index: int
    psnr_db: float | None
    ssim: float | None
    model: str | None = None
    model_scores: Mapping[str, float] | None = None


def model_report(
    scores: Iterable[ChunkScore], requested: str
) -> tuple[dict[str, int], tuple[ChunkModel, ...]]:
    """Chunks per model, and each chunk's model with how it was picked: by the job (`requested` names
    a model), by `auto`'s check (the chunk has scores) or by `auto`'s rule."""
    entries: list[ChunkModel] = []
    for score in sorted(scores, key=lambda s: s.index):
        if score.model is None:
            continue
        checked = dict(score.model_scores or {})
        chosen_by = "job" if requested != "auto" else ("check" if checked else "rule")
        entries.append(
            ChunkModel(chunk_index=score.index, model=score.model, chosen_by=chosen_by, scores=checked)
        )
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.model] = counts.get(entry.model, 0) + 1
    return counts, tuple(entries)


def quality_report(
    scores: Iterable[ChunkScore], floor_db: float, requested_model: str = "auto"
) -> QualityReport | None:
    """The job's quality summary, or None when no chunk was checked."""
    scores = list(scores)
    checked = [(s.index, s.psnr_db, s.ssim) for s in scores if s.psnr_db is not None]
    if not checked:
        return None
    model_chunks, chunk_models = model_report(scores, requested_model)
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
        model_chunks=model_chunks,
        chunk_models=chunk_models,
    )


def final_status(quality: QualityReport | None) -> JobStatus:
    """`completed_with_warnings` when a checked chunk is below the floor, else `completed`."""
    if quality is not None and quality.chunks_below_floor:
        return JobStatus.COMPLETED_WITH_WARNINGS
    return JobStatus.COMPLETED


def timing_report(plan: JobSplit, *, input_vfr: bool, measured: OutputTiming) -> TimingReport:
    """The job's timing: planned input rate, frames and cuts, and the output as measured."""
    in_rate = Fraction(plan.in_fps_num, plan.in_fps_den)
    cuts = [int(frame) for frame in plan.scene_cuts]
    frames = int(plan.source_frame_count)
    duration = Fraction(frames) / in_rate
    times = [frame / in_rate for frame in cuts]
    if plan.vfr_kept and plan.vfr_pts:  # variable rate kept: the input's own timestamps
        tick, pts = Fraction(plan.vfr_time_base_num, plan.vfr_time_base_den), list(plan.vfr_pts)
        last = pts[-1] - pts[-2] if len(pts) > 1 else 0
        duration = (pts[-1] + last) * tick
        times = [pts[frame] * tick for frame in cuts]
    return TimingReport(
        input_vfr=input_vfr,
        vfr_converted=plan.vfr_converted,
        in_duration_s=float(duration),
        out_duration_s=measured.video_duration_s,
        out_frames_measured=measured.video_frames,
        audio_duration_s=measured.audio_duration_s,
        audio_video_drift_s=measured.drift_s,
        scene_cut_frames=tuple(cuts),
        scene_cut_times_s=tuple(float(time) for time in times),
    )


def job_result(
    event: JobCompleted,
    plan: JobSplit,
    *,
    options: OutputOptions | None,
    tracks: Iterable[Mapping[str, Any]],
    mux_seconds: float,
    interpolate_s: float | None = None,
) -> JobResult:
    """The stored result of a completed job: what its `JobCompleted` event says (output, rates, frame
    counts, duration, quality, timing), and what only the plan, the output options and the assembled
    file know (cuts, container, encoding, streams)."""
    in_rate = Fraction(event.in_fps_num, event.in_fps_den)
    out_rate = Fraction(event.out_fps_num, event.out_fps_den)
    encoding = plan.encoding
    return JobResult(
        output_bucket=event.output_bucket,
        output_key=event.output_key,
        output_size_bytes=event.output_size_bytes,
        in_fps=rational(in_rate),
        out_fps=rational(out_rate),
        in_frames=event.in_frame_count,
        out_frames=event.out_frame_count,
        duration_s=event.duration_s,
        scene_starts=plan.scene_cuts,
        vfr_converted=plan.vfr_converted,
        mux_seconds=round(mux_seconds, 3),
        container=plan.container,
        container_reason=options.container_reason if options else None,
        container_losses=options.container_losses if options else (),
        tracks=tuple(dict(track) for track in tracks),
        video=OutputVideo(
            encoder=encoding.encoder if encoding else None,
            crf=encoding.crf if encoding else None,
            bitrate=encoding.bitrate if encoding else None,
            preset=encoding.preset if encoding else None,
        ),
        quality=event.quality,
        timing=(
            timing_view(event.timing, in_rate=in_rate, out_rate=out_rate, in_frames=event.in_frame_count)
            if event.timing
            else None
        ),
        interpolate_s=round(interpolate_s, 3) if interpolate_s is not None else None,
    )
