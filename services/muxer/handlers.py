"""`chunk.interpolated` and `job.split` → when every chunk is in, the output and `job.completed`.

Each chunk result is recorded at most once, and only for the chunk's current lease epoch (a late
result of an evicted worker is fenced off). Progress only grows. All of a job's records share a
partition (keyed by job_id), so one muxer instance sees them in order; the transition to `muxing`
happens once, and a crash mid-assembly is resumed by the redelivered record (the output key is
deterministic, so a second upload replaces the first with the same content).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import col

from infiniteflow_common import jobs
from infiniteflow_common.chaos import crash_point
from infiniteflow_common.db import FINAL_STATUSES, Chunk, ChunkStatus, Job, JobStatus, transaction, utcnow
from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.events import (
    ChunkInterpolated,
    JobCompleted,
    JobParams,
    JobSplit,
    decode_event,
)
from infiniteflow_common.failures import job_fails_on
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.observability import get_logger
from infiniteflow_common.output import OutputOptions
from infiniteflow_common.reports import timing_view
from infiniteflow_common.tenants import tenant_prefix
from infiniteflow_common.topics import Topic
from services.muxer import metrics
from services.muxer.assemble import (
    MuxError,
    OutputSpec,
    build_command,
    measure_output,
    output_times,
    probe_hdr,
    probe_streams,
    restamp,
    rotation_command,
    run_ffmpeg,
    write_concat_list,
)
from services.muxer.config import MuxerSettings
from services.muxer.report import ChunkScore, final_status, quality_report, timing_report

log = get_logger()
SPLIT_PROGRESS, MUX_PROGRESS = 15, 90


def output_key(job: Job, rate: Fraction, prefix: str = "") -> str:
    """`{tenant prefix}{job_id}/{source stem}_{rate}fps.mp4`, the stem reduced to safe characters."""
    stem = PurePosixPath(job.source_key).stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:80] or "video"
    fps = f"{float(rate):.3f}".rstrip("0").rstrip(".")
    return f"{prefix}{job.id}/{safe}_{fps}fps.mp4"


def observe_job(job: Job, completed_at: datetime, *, mux_seconds: float) -> None:
    """Record a completed job's end-to-end and per-stage latency."""
    metrics.JOB_SECONDS.observe(max(0.0, (completed_at - job.created_at).total_seconds()))
    metrics.JOB_STAGE_SECONDS.labels("mux").observe(mux_seconds)
    if job.split_at is not None:
        metrics.JOB_STAGE_SECONDS.labels("split").observe(
            max(0.0, (job.split_at - job.created_at).total_seconds())
        )
        interpolate = (completed_at - job.split_at).total_seconds() - mux_seconds
        metrics.JOB_STAGE_SECONDS.labels("interpolate").observe(max(0.0, interpolate))


class MuxHandler(PipelineHandler):
    """Records chunk results and assembles complete jobs."""

    def __init__(self, *, settings: MuxerSettings, deps: Deps) -> None:
        super().__init__(deps)
        self.settings = settings

    async def on_chunk(self, delivery: Delivery) -> None:
        """Handle one `chunk.interpolated` record."""
        event = decode_event(self.catalog, delivery.value, ChunkInterpolated)
        async with transaction(self.sessions) as session:
            recorded = await session.execute(
                update(Chunk)
                .where(col(Chunk.job_id) == event.job_id, col(Chunk.chunk_index) == event.chunk_index)
                .where(
                    col(Chunk.lease_epoch) == event.lease_epoch, col(Chunk.status) != ChunkStatus.DONE.value
                )
                .values(
                    status=ChunkStatus.DONE.value,
                    output_key=event.object_key,
                    frames_out=event.frames_out,
                    interp_seconds=event.interp_seconds,
                    quality_psnr_db=event.quality_psnr_db,
                    quality_ssim=event.quality_ssim,
                    quality_samples=event.quality_samples,
                    quality_seconds=event.quality_seconds,
                    scale=event.scale,
                    batch_size=event.batch_size,
                    oom_retries=event.oom_retries,
                    worker=event.worker_id,
                    finished_at=event.finished_at,
                )
            )
            if getattr(recorded, "rowcount", 0):
                metrics.CHUNK_RESULTS.labels("recorded").inc()
            else:
                chunk = await session.get(Chunk, (event.job_id, event.chunk_index))
                outcome = "replayed" if chunk and chunk.lease_epoch == event.lease_epoch else "fenced"
                metrics.CHUNK_RESULTS.labels(outcome).inc()
                log.info(
                    "chunk result not counted",
                    job_id=str(event.job_id),
                    chunk_index=event.chunk_index,
                    epoch=event.lease_epoch,
                    outcome=outcome,
                )
        await self._maybe_assemble(event.job_id)

    async def on_split(self, delivery: Delivery) -> None:
        """Handle one `job.split` record (chunks may all be in already when it arrives late)."""
        event = decode_event(self.catalog, delivery.value, JobSplit)
        await self._maybe_assemble(event.job_id)

    async def _maybe_assemble(self, job_id: uuid.UUID) -> None:
        async with transaction(self.sessions) as session:
            done = (
                await session.execute(
                    select(func.count())
                    .select_from(Chunk)
                    .where(col(Chunk.job_id) == job_id, col(Chunk.status) == ChunkStatus.DONE.value)
                )
            ).scalar_one()
            job = await session.get(Job, job_id, with_for_update=True)
            if job is None or job.chunks_total is None or job.status in FINAL_STATUSES:
                return
            progress = SPLIT_PROGRESS + (MUX_PROGRESS - SPLIT_PROGRESS) * done // max(1, job.chunks_total)
            await session.execute(
                update(Job)
                .where(col(Job.id) == job_id)
                .values(chunks_done=func.greatest(col(Job.chunks_done), done), updated_at=utcnow())
            )
            await jobs.set_progress(session, job_id, progress)
            if done < job.chunks_total:
                return
            await jobs.advance(session, job_id, JobStatus.MUXING, progress=MUX_PROGRESS)
        async with job_fails_on(self.sessions, self.publish, job_id=job_id, stage="muxer"):
            await self._assemble(job_id)

    async def _assemble(self, job_id: uuid.UUID) -> None:
        started = time.perf_counter()
        async with transaction(self.sessions) as session:
            job = await session.get(Job, job_id)
            chunks = (
                (
                    await session.execute(
                        select(Chunk).where(col(Chunk.job_id) == job_id).order_by(col(Chunk.chunk_index))
                    )
                )
                .scalars()
                .all()
            )
        if job is None or job.plan is None:
            raise MuxError(f"job {job_id} has no split plan to assemble", code="E_MUX_NO_PLAN")
        plan: dict[str, Any] = job.plan
        probe: dict[str, Any] = job.probe or {}
        rate = Fraction(plan["out_rate"])
        workdir = self.settings.scratch_dir / str(job_id)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            paths = []
            for chunk in chunks:
                path = workdir / f"{chunk.chunk_index:05d}.mkv"
                await asyncio.to_thread(
                    self.storage.fget_object, self.settings.work_bucket, str(chunk.output_key), str(path)
                )
                paths.append(path)
            source = workdir / "source"
            await asyncio.to_thread(self.storage.fget_object, job.source_bucket, job.source_key, str(source))
            concat = workdir / "chunks.ffconcat"
            write_concat_list(concat, paths)
            output = workdir / "output.mp4"
            streams = await asyncio.to_thread(probe_streams, source)
            options = OutputOptions.model_validate(job.output_options or {})
            encoder = options.encoder or "libx264"
            x264 = encoder == "libx264"
            spec = OutputSpec(
                rate=rate,
                pix_fmt=str(probe.get("pix_fmt") or "yuv420p"),
                rotation=int(probe.get("rotation") or 0),
                color_range=probe.get("color_range"),
                color_space=probe.get("color_space"),
                color_transfer=probe.get("color_transfer"),
                color_primaries=probe.get("color_primaries"),
                encoder=encoder,
                crf=options.crf if options.crf is not None or not x264 else self.settings.x264_crf,
                preset=options.preset or (self.settings.x264_preset if x264 else None),
                bitrate=options.bitrate,
                hdr=await asyncio.to_thread(probe_hdr, source, streams),
            )
            encoded = workdir / "encoded.mp4" if spec.rotation % 360 else output
            timed: Path | None = None
            stamps = output_times(plan)
            if stamps is not None:  # variable-rate input kept variable: frames keep their own times
                timed = workdir / "timed.nut"
                await asyncio.to_thread(restamp, paths, timed, *stamps)
            command = build_command(
                concat, source, encoded, spec, streams,
                timed_video=timed, time_base=stamps[0] if stamps else None,
            )  # fmt: skip
            await asyncio.to_thread(run_ffmpeg, command, self.settings.ffmpeg_timeout_s)
            if encoded != output:
                rotate = rotation_command(encoded, output, spec.rotation)
                await asyncio.to_thread(run_ffmpeg, rotate, self.settings.ffmpeg_timeout_s)
            measured = await asyncio.to_thread(measure_output, output)
            async with transaction(self.sessions) as session:
                prefix = await tenant_prefix(session, job.tenant_id)
            key = output_key(job, rate, prefix)
            size = output.stat().st_size
            await asyncio.to_thread(
                self.storage.fput_object,
                self.settings.output_bucket,
                key,
                str(output),
                content_type="video/mp4",
            )
            crash_point(self.settings, "muxer.after_upload")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        in_rate = Fraction(plan["in_rate"])
        out_frames = int(plan["out_frames"])
        # TODO(issue 14): the chunk columns `model` / `model_scores` arrive with migration 0006; until
        # then getattr finds none and the report's model fields stay empty.
        quality = quality_report(
            (
                ChunkScore(
                    c.chunk_index,
                    c.quality_psnr_db,
                    c.quality_ssim,
                    getattr(c, "model", None),
                    getattr(c, "model_scores", None),
                )
                for c in chunks
            ),
            self.settings.quality_psnr_floor,
            requested_model=str(job.params.get("model") or "auto"),
        )
        status = final_status(quality)
        timing = timing_report(plan, input_vfr=bool(probe.get("is_vfr")), measured=measured)
        if timing.audio_video_drift_s is not None and abs(timing.audio_video_drift_s) >= 1 / float(rate):
            log.warning(
                "audio and video ends differ by more than one output frame",
                job_id=str(job_id),
                drift_s=round(timing.audio_video_drift_s, 4),
            )
        completed_at = datetime.now(UTC)
        result = {
            "output_bucket": self.settings.output_bucket,
            "output_key": key,
            "output_size_bytes": size,
            "in_fps": plan["in_rate"],
            "out_fps": plan["out_rate"],
            "in_frames": plan["source_frames"],
            "out_frames": out_frames,
            "duration_s": out_frames / float(rate),
            "scene_starts": plan["scene_starts"],
            "vfr_converted": plan["vfr_converted"],
            "mux_seconds": round(time.perf_counter() - started, 3),
            "video": {
                "encoder": spec.encoder,
                "crf": spec.crf,
                "bitrate": spec.bitrate,
                "preset": spec.preset,
            },
            "quality": quality.model_dump(mode="json") if quality else None,
            "timing": timing_view(
                timing, in_rate=in_rate, out_rate=rate, in_frames=int(plan["source_frames"])
            ),
        }
        async with transaction(self.sessions) as session:
            completed = await jobs.advance(
                session,
                job_id,
                status,
                progress=100,
                output_bucket=self.settings.output_bucket,
                output_key=key,
                completed_at=completed_at,
                result=result,
                quality_psnr_db=quality.psnr_db if quality else None,
                quality_ssim=quality.ssim if quality else None,
                quality_worst_chunk=quality.worst_chunk_index if quality else None,
                quality_worst_psnr_db=quality.worst_chunk_psnr_db if quality else None,
                quality_low_chunks=list(quality.chunks_below_floor) if quality else None,
            )
        await self.publish(
            Topic.JOB_COMPLETED,
            JobCompleted(
                job_id=job_id,
                bucket=job.source_bucket,
                key=job.source_key,
                params=JobParams.model_validate(job.params),
                output_bucket=self.settings.output_bucket,
                output_key=key,
                output_size_bytes=size,
                in_fps_num=in_rate.numerator,
                in_fps_den=in_rate.denominator,
                out_fps_num=rate.numerator,
                out_fps_den=rate.denominator,
                in_frame_count=int(plan["source_frames"]),
                out_frame_count=out_frames,
                duration_s=out_frames / float(rate),
                processing_seconds=(completed_at - job.created_at).total_seconds(),
                completed_at=completed_at,
                status=status.value,
                quality=quality,
                timing=timing,
            ),
        )
        metrics.MUX_SECONDS.observe(time.perf_counter() - started)
        if completed:  # a replayed assembly does not count the job twice
            observe_job(job, completed_at, mux_seconds=result["mux_seconds"])
            if quality is not None:
                metrics.JOB_QUALITY_PSNR.observe(quality.psnr_db)
        log.info(
            "job completed",
            job_id=str(job_id),
            status=status.value,
            output_key=key,
            out_frames=out_frames,
            size_bytes=size,
            quality_psnr_db=round(quality.psnr_db, 2) if quality else None,
            worst_chunk=quality.worst_chunk_index if quality else None,
            chunks_below_floor=list(quality.chunks_below_floor) if quality else None,
        )
