"""The splitter's decisions as contracts: the chunk announcements and the job's plan (pure)."""

from __future__ import annotations

import uuid
from datetime import datetime
from fractions import Fraction
from typing import Literal

from infiniteflow_common.events import (
    ChunkReady,
    JobSplit,
    SourceRange,
    VideoEncoding,
    VideoUploaded,
)
from services.splitter.analysis import Analysis, decode_start
from services.splitter.plan import ChunkPlan, JobPlan


def chunk_specs(
    event: VideoUploaded, plan: JobPlan, analysis: Analysis, encoding: VideoEncoding, *, model: str
) -> list[ChunkReady]:
    """One `ChunkReady` per planned chunk: its frames in the pinned source and its output slots."""
    return [
        chunk_spec(
            event,
            chunk,
            analysis,
            encoding,
            out_rate=plan.out_rate,
            chunk_count=len(plan.chunks),
            model=model,
        )
        for chunk in plan.chunks
    ]


def chunk_spec(
    event: VideoUploaded,
    chunk: ChunkPlan,
    analysis: Analysis,
    encoding: VideoEncoding,
    *,
    out_rate: Fraction,
    chunk_count: int | None,
    model: str,
) -> ChunkReady:
    """The announcement of one chunk (`chunk_count` None: planned while the pass still runs)."""
    decoded = [analysis.source_of[i] for i in range(chunk.first_frame, chunk.first_frame + chunk.frame_count)]
    frame_pts = [analysis.frame_pts[d] for d in decoded]
    timed = all(p is not None for p in frame_pts)
    base = analysis.stream_time_base
    return ChunkReady(
        job_id=event.job_id,
        chunk_index=chunk.index,
        chunk_count=chunk_count,
        object_key=event.key,
        first_frame=chunk.first_frame,
        frame_count=chunk.frame_count,
        first_output_frame=chunk.first_output_frame,
        shares_last_frame=chunk.shares_last_frame,
        ends_scene=chunk.ends_scene,
        timesteps=tuple(slot.to_wire() for slot in chunk.slots),
        engine=event.params.engine,
        quality=event.params.quality,
        width=analysis.width,
        height=analysis.height,
        pix_fmt=analysis.pix_fmt,
        attempt=1,
        source=SourceRange(
            bucket=event.bucket,
            key=event.key,
            version_id=event.version_id,
            etag=event.etag,
            size_bytes=event.size_bytes,
            time_base_num=base.numerator,
            time_base_den=base.denominator,
            frame_pts=tuple(int(p or 0) for p in frame_pts) if timed else None,
            frame_indices=tuple(decoded),
            decode_start_pts=decode_start(analysis, min(decoded)) if timed else None,
        ),
        encoding=encoding,
        out_fps_num=out_rate.numerator,
        out_fps_den=out_rate.denominator,
        model=model,
    )


def plan_event(
    job_id: uuid.UUID,
    plan: JobPlan,
    analysis: Analysis,
    encoding: VideoEncoding,
    *,
    started_at: datetime,
    split_at: datetime,
    container: Literal["mp4", "mov", "mkv"] = "mp4",
) -> JobSplit:
    """The job's plan as the `JobSplit` event the muxer and the status API read."""
    positions = analysis.positions
    # scene cuts as the user counts frames: input frame indices, whatever was skipped
    cuts = tuple(int(positions[s]) if positions else s for s in plan.scene_starts)
    vfr = analysis.pts is not None and analysis.time_base is not None
    time_base = analysis.time_base if vfr and analysis.time_base else None
    return JobSplit(
        job_id=job_id,
        chunk_count=len(plan.chunks),
        source_frame_count=plan.input_frames or plan.source_frames,
        in_fps_num=plan.in_rate.numerator,
        in_fps_den=plan.in_rate.denominator,
        out_fps_num=plan.out_rate.numerator,
        out_fps_den=plan.out_rate.denominator,
        out_frame_count=plan.out_frames,
        scene_cuts=cuts,
        vfr_converted=analysis.vfr_converted,
        split_at=split_at,
        planned_frame_count=plan.source_frames,
        duplicates_skipped=(plan.input_frames or plan.source_frames) - plan.source_frames,
        vfr_kept=vfr,
        vfr_time_base_num=time_base.numerator if time_base else 0,
        vfr_time_base_den=time_base.denominator if time_base else 1,
        vfr_pts=tuple(analysis.pts or ()) if vfr else None,
        encoding=encoding,
        split_started_at=started_at,
        container=container,
    )
