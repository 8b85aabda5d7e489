"""How a finished job's timing report reads, in the webhook and in the status API alike (pure).

Frame rates are exact rationals written `num/den` ("30000/1001", "30/1"); durations are seconds. The
drift is also given in output frames, the unit its bound is stated in (under one frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from infiniteflow_common.db import Job
from infiniteflow_common.domain import (
    AudioTimingView,
    InputTimingView,
    OutputTimingView,
    SceneCutView,
    TimingView,
)
from infiniteflow_common.events import JobSplit, TimingReport


def rational(rate: Fraction) -> str:
    """`num/den`, always with the denominator, as ffprobe's r_frame_rate writes it."""
    return f"{rate.numerator}/{rate.denominator}"


def timing_view(report: TimingReport, *, in_rate: Fraction, out_rate: Fraction, in_frames: int) -> TimingView:
    """The `timing` block of a completed job."""
    drift = report.audio_video_drift_s
    return TimingView(
        input=InputTimingView(
            fps=rational(in_rate),
            frame_count=in_frames,
            duration_s=report.in_duration_s,
            vfr=report.input_vfr,
            vfr_converted=report.vfr_converted,
        ),
        output=OutputTimingView(
            fps=rational(out_rate),
            frame_count=report.out_frames_measured,
            duration_s=report.out_duration_s,
        ),
        audio=(
            None
            if report.audio_duration_s is None
            else AudioTimingView(
                duration_s=report.audio_duration_s,
                drift_s=drift,
                drift_frames=None if drift is None else round(drift * float(out_rate), 4),
            )
        ),
        scene_cuts=tuple(
            SceneCutView(frame=frame, time_s=time)
            for frame, time in zip(report.scene_cut_frames, report.scene_cut_times_s, strict=True)
        ),
    )


def plan_view(plan: JobSplit | None) -> dict[str, Any] | None:
    """The job's plan as the status API shows it: rates, counts, cuts, VFR (no per-frame lists)."""
    if plan is None:
        return None
    return {
        "in_rate": f"{plan.in_fps_num}/{plan.in_fps_den}",
        "out_rate": f"{plan.out_fps_num}/{plan.out_fps_den}",
        "source_frames": plan.source_frame_count,
        "out_frames": plan.out_frame_count,
        "scene_starts": list(plan.scene_cuts),
        "chunk_count": plan.chunk_count,
        "duplicates_skipped": plan.duplicates_skipped,
        "vfr_converted": plan.vfr_converted,
        "vfr_kept": plan.vfr_kept,
        "encoder": plan.encoding.encoder if plan.encoding else None,
    }


CHECK_BUDGET = 0.06
"""Share of a chunk's engine time that `model=auto`'s choice and the quality self-check may cost
together (issue 20; the workers' MODEL_CHOICE_BUDGET default)."""


@dataclass(frozen=True)
class CheckCosts:
    """Seconds over a job's finished chunks: all of their work, the model choices (whose winner's
    check is the chunk's self-check), and the self-checks of chunks whose model was not checked."""

    chunks: int
    engine_s: float
    model_choice_s: float
    quality_s: float


def check_view(costs: CheckCosts | None, budget: float = CHECK_BUDGET) -> dict[str, Any] | None:
    """The `checks` block of the status API's timings: what checking cost against its budget."""
    if costs is None or costs.chunks == 0:
        return None
    spent = costs.model_choice_s + costs.quality_s
    return {
        "chunks": costs.chunks,
        "engine_s": round(costs.engine_s, 3),
        "model_choice_seconds": round(costs.model_choice_s, 3),
        "quality_seconds": round(costs.quality_s, 3),
        "share": round(spent / costs.engine_s, 4) if costs.engine_s > 0 else None,
        "budget": budget,
    }


def stage_seconds(job: Job) -> dict[str, float | None]:
    """Wall seconds of each stage: split (the splitter's pass), interpolate (first chunk start → last chunk end),
    mux (assembly claimed → output recorded); None while a stage has not finished."""

    def between(start: datetime | None, end: datetime | None) -> float | None:
        return round((end - start).total_seconds(), 3) if start and end else None

    return {
        "split_s": between(job.split_started_at, job.split_at),
        "interpolate_s": job.result.interpolate_s if job.result else None,
        "mux_s": between(job.mux_started_at, job.completed_at),
    }
