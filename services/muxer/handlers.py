"""`chunk.interpolated` and `job.split` → when every chunk is in, the output and `job.completed`.

Each chunk result is recorded at most once, and only for the chunk's current lease epoch (a late
result of an evicted worker is fenced off). Progress only grows. When the last chunk is in, one muxer
claims the job's assembly with a lease (renewed while it works), so two replicas never assemble one
job; a crashed muxer's claim expires and the redelivered record resumes it (the output key is
deterministic, so a second upload replaces the first with the same content). The lease fences the
assembly: a muxer whose renewal finds the claim lost (or cannot renew it before it runs out) stops
before its next step and never uploads, and the completion itself is written only while the claim is
still this muxer's, so a muxer that lost it never completes the job nor announces `job.completed`.
Assembly is I/O: the encoded chunks are concatenated by stream copy with the source's audio and
subtitles.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import PurePosixPath
from typing import Any

from minio.error import S3Error

from infiniteflow_common import chunks, jobs
from infiniteflow_common.chaos import crash_point
from infiniteflow_common.db import Chunk, Job, transaction, utcnow
from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.domain import FINAL_STATUSES, SUCCEEDED, JobResult, JobStatus
from infiniteflow_common.errors import TransientError
from infiniteflow_common.events import ChunkInterpolated, JobCompleted, JobSplit, decode_event
from infiniteflow_common.failures import job_fails_on
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.leases import keep_lease
from infiniteflow_common.observability import get_logger
from infiniteflow_common.progress import JobProgress, chunks_progress
from infiniteflow_common.storage import delete_prefix, fetch_source
from infiniteflow_common.streams import CONTENT_TYPES
from infiniteflow_common.tenants import tenant_prefix
from infiniteflow_common.topics import Topic
from services.muxer import metrics
from services.muxer.assemble import (
    MuxError,
    OutputTiming,
    measure_output,
    output_stamps,
    probe_streams,
    remux_command,
    run_ffmpeg,
)
from services.muxer.concat import concatenate
from services.muxer.config import MuxerSettings
from services.muxer.report import ChunkScore, final_status, job_result, quality_report, timing_report

log = get_logger()


def output_key(job: Job, rate: Fraction, prefix: str = "", container: str = "mp4") -> str:
    """`{tenant prefix}{job_id}/{source stem}_{rate}fps.{container}`, the stem reduced to safe characters.

    The extension is the container chosen at ingest (`mp4`, `mov` or `mkv`), so the key says it.
    """
    stem = PurePosixPath(job.source_key).stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:80] or "video"
    fps = f"{float(rate):.3f}".rstrip("0").rstrip(".")
    return f"{prefix}{job.id}/{safe}_{fps}fps.{container}"


def observe_job(job: Job, completed_at: datetime, *, mux_seconds: float) -> None:
    """Record a completed job's end-to-end and per-stage latency."""
    metrics.JOB_SECONDS.observe(max(0.0, (completed_at - job.created_at).total_seconds()))
    metrics.JOB_STAGE_SECONDS.labels("mux").observe(mux_seconds)
    if job.split_at is not None:
        metrics.JOB_STAGE_SECONDS.labels("split").observe(
            max(0.0, (job.split_at - (job.split_started_at or job.created_at)).total_seconds())
        )
        interpolate = (completed_at - job.split_at).total_seconds() - mux_seconds
        metrics.JOB_STAGE_SECONDS.labels("interpolate").observe(max(0.0, interpolate))


class AssemblyLost(TransientError):  # noqa: N818 - a state, not an error class name
    """This muxer's claim on the job's assembly was lost (taken over, or run out): it stops, keeps
    nothing, completes nothing; the record is read again and finds the job in other hands or done."""

    code = "E_ASSEMBLY_LEASE_LOST"


@dataclass(frozen=True)
class Assembled:
    """What the I/O shell made: the output object, its size and what ffprobe measured in it."""

    key: str
    size: int
    measured: OutputTiming
    tracks: tuple[dict[str, Any], ...] = ()
    """The output's audio and subtitle streams as ffprobe reads them back (codec, language, title, flags)."""


def completion(
    job: Job,
    plan: JobSplit,
    parts: list[Chunk],
    assembled: Assembled,
    *,
    floor_db: float,
    output_bucket: str,
    completed_at: datetime,
    mux_seconds: float,
    interpolate_s: float | None = None,
) -> tuple[JobCompleted, JobResult]:
    """The job's `JobCompleted` event and its stored result, derived from the event (pure)."""
    if job.job_params is None:  # a job rejected at ingest is never split, so never muxed
        raise ValueError(f"job {job.id} has no parameters to complete")
    rate = Fraction(plan.out_fps_num, plan.out_fps_den)
    in_rate = Fraction(plan.in_fps_num, plan.in_fps_den)
    quality = quality_report(
        (
            ChunkScore(c.chunk_index, c.quality_psnr_db, c.quality_ssim, c.model, c.model_scores)
            for c in parts
        ),
        floor_db,
        requested_model=job.job_params.model if job.job_params else "auto",
    )
    status = final_status(quality)
    input_vfr = job.probe is not None and job.probe.is_vfr
    timing = timing_report(plan, input_vfr=input_vfr, measured=assembled.measured)
    out_frames = int(plan.out_frame_count)
    event = JobCompleted(
        job_id=job.id,
        bucket=job.source_bucket,
        key=job.source_key,
        params=job.job_params,
        output_bucket=output_bucket,
        output_key=assembled.key,
        output_size_bytes=assembled.size,
        in_fps_num=in_rate.numerator,
        in_fps_den=in_rate.denominator,
        out_fps_num=rate.numerator,
        out_fps_den=rate.denominator,
        in_frame_count=int(plan.source_frame_count),
        out_frame_count=out_frames,
        duration_s=out_frames / float(rate),
        processing_seconds=(completed_at - job.created_at).total_seconds(),
        completed_at=completed_at,
        status=status.value,
        quality=quality,
        timing=timing,
    )
    result = job_result(
        event,
        plan,
        options=job.output_options,
        tracks=assembled.tracks,
        mux_seconds=mux_seconds,
        interpolate_s=interpolate_s,
    )
    return event, result


class MuxHandler(PipelineHandler):
    """Records chunk results and assembles complete jobs."""

    def __init__(self, *, settings: MuxerSettings, deps: Deps) -> None:
        super().__init__(deps)
        self.settings = settings
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def on_chunk(self, delivery: Delivery) -> None:
        """Handle one `chunk.interpolated` record."""
        event = decode_event(self.catalog, delivery.value, ChunkInterpolated)
        async with transaction(self.sessions) as session:
            outcome = await chunks.record_result(session, event)
        metrics.CHUNK_RESULTS.labels(outcome).inc()
        if outcome != "recorded":
            log.info(
                "chunk result not counted",
                job_id=str(event.job_id),
                chunk_index=event.chunk_index,
                epoch=event.lease_epoch,
                outcome=outcome,
            )
        await self._maybe_assemble(event.job_id)

    async def on_plan(self, delivery: Delivery) -> None:
        """Handle one `job.split` record, the job's plan (chunks may all be in already when it arrives late)."""
        event = decode_event(self.catalog, delivery.value, JobSplit)
        await self._maybe_assemble(event.job_id)

    async def _maybe_assemble(self, job_id: uuid.UUID) -> None:
        ended = False
        async with transaction(self.sessions) as session:
            done = await chunks.done_count(session, job_id)
            job = await session.get(Job, job_id, with_for_update=True)
            ended = job is not None and job.status in FINAL_STATUSES
            if job is None or job.chunks_total is None or ended:
                job = None
            else:
                progress = chunks_progress(done, job.chunks_total)
                await jobs.record_chunks_done(session, job_id, done)
                await jobs.set_progress(session, job_id, progress)
        if ended:
            # a chunk uploaded after its job ended (failed by another chunk meanwhile, or a fenced
            # worker's late result) arrived after the job's cleanup: remove it now
            await self._delete_work(job_id)
        if job is None or job.chunks_total is None or done < job.chunks_total:
            return
        if not await self._claim(job_id):
            return
        async with job_fails_on(
            self.sessions, self.publish, job_id=job_id, stage="muxer", cleanup=self._delete_work
        ):
            await self._assemble(job_id)

    async def _claim(self, job_id: uuid.UUID) -> bool:
        """Take the job's assembly; wait out a silent claim of another muxer (it may have crashed)."""
        for _ in range(3):
            async with transaction(self.sessions) as session:
                claimed, until = await jobs.claim_assembly(
                    session, job_id, owner=self.owner, lease_s=self.settings.assembly_lease_s
                )
            if claimed:
                return True
            if until is None:
                return False  # final meanwhile
            wait = (until - utcnow()).total_seconds() + 0.5
            log.info(
                "job assembled by another muxer; waiting for its claim",
                job_id=str(job_id),
                wait_s=round(wait, 1),
            )
            await asyncio.sleep(min(max(wait, 0.1), self.settings.assembly_lease_s + 1))
        metrics.ASSEMBLY_CLAIMS.labels("held_elsewhere").inc()
        log.info("job is being assembled by another muxer", job_id=str(job_id))
        return False

    def _keep_claim(self, job_id: uuid.UUID, lost: threading.Event) -> Coroutine[Any, Any, None]:
        """Renew the claim `_claim` secured just now; set `lost` once it is not this muxer's for sure.

        A claim that runs out unrenewed (the database down) counts as lost too: another muxer may take
        the job then, and two must never upload the same output.
        """

        async def renew() -> bool:
            async with transaction(self.sessions) as session:
                return await jobs.renew_assembly(
                    session, job_id, owner=self.owner, lease_s=self.settings.assembly_lease_s
                )

        return keep_lease(
            renew,
            lease_s=self.settings.assembly_lease_s,
            lost=lost,
            what="assembly claim",
            lost_when_run_out=True,
            job_id=str(job_id),
        )

    async def _assemble(self, job_id: uuid.UUID) -> None:
        started = time.perf_counter()
        metrics.ASSEMBLY_CLAIMS.labels("claimed").inc()
        async with transaction(self.sessions) as session:
            job = await session.get(Job, job_id)
            parts = await chunks.in_order(session, job_id)
            first_start, last_end = await chunks.work_window(session, job_id)
            prefix = await tenant_prefix(session, job.tenant_id) if job else ""
        if job is None or job.plan is None:
            raise MuxError(f"job {job_id} has no split plan to assemble", code="E_MUX_NO_PLAN")
        plan = job.plan
        rate = Fraction(plan.out_fps_num, plan.out_fps_den)
        missing = await asyncio.to_thread(self._missing_outputs, parts)
        if missing:
            await self._redo(job_id, missing)
            return
        lost = threading.Event()
        keeper = asyncio.create_task(self._keep_claim(job_id, lost))
        try:
            key = output_key(job, rate, prefix, plan.container)
            assembled = await asyncio.to_thread(self._build, job, plan, parts, key, lost)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        crash_point(self.settings, "muxer.after_upload")
        completed_at = datetime.now(UTC)
        mux_seconds = time.perf_counter() - started
        event, result = completion(
            job,
            plan,
            parts,
            assembled,
            floor_db=self.settings.quality_psnr_floor,
            output_bucket=self.settings.output_bucket,
            completed_at=completed_at,
            mux_seconds=mux_seconds,
            interpolate_s=(last_end - first_start).total_seconds() if first_start and last_end else None,
        )
        quality = event.quality
        drift = event.timing.audio_video_drift_s if event.timing else None
        if drift is not None and abs(drift) >= 1 / float(rate):
            log.warning(
                "audio and video ends differ by more than one output frame",
                job_id=str(job_id),
                drift_s=round(drift, 4),
            )
        async with transaction(self.sessions) as session:
            completed = await jobs.advance(
                session,
                job_id,
                JobStatus(event.status),
                assembly_owner=self.owner,  # fenced: only while the claim is still this muxer's
                progress=JobProgress.DONE,
                output_bucket=self.settings.output_bucket,
                output_key=assembled.key,
                completed_at=completed_at,
                result=result,
                quality_psnr_db=quality.psnr_db if quality else None,
                quality_ssim=quality.ssim if quality else None,
                quality_worst_chunk=quality.worst_chunk_index if quality else None,
                quality_worst_psnr_db=quality.worst_chunk_psnr_db if quality else None,
                quality_low_chunks=list(quality.chunks_below_floor) if quality else None,
            )
            now = await jobs.get_job(session, job_id)
        if not completed and now is not None and now.status not in FINAL_STATUSES:
            # the claim ran out or went to another muxer meanwhile: that one assembles and completes
            # the job (and uploads this very key), so this one leaves the output and the work alone
            metrics.ASSEMBLY_CLAIMS.labels("lost").inc()
            raise AssemblyLost(f"the assembly claim on job {job_id} was lost before it completed")
        if not completed and now is not None and now.status in SUCCEEDED:
            # another muxer took the claim over and completed the job: it announced it, not this one
            log.warning(
                "job completed by the muxer that took the assembly over; not announced again",
                job_id=str(job_id),
                owner=now.mux_owner,
            )
            return
        if now is None or now.status not in SUCCEEDED:
            # failed or cancelled while we assembled: a final job never also completes, and the
            # output just uploaded is nobody's (no download link will ever point at it)
            log.warning(
                "job ended while it was assembled; not completed, output removed",
                job_id=str(job_id),
                status=now and now.status,
                output_key=assembled.key,
            )
            await asyncio.to_thread(self.storage.remove_object, self.settings.output_bucket, assembled.key)
            await self._delete_work(job_id)
            return
        await self.publish(Topic.JOB_COMPLETED, event)
        await self._delete_work(job_id)
        metrics.MUX_SECONDS.observe(mux_seconds)
        if completed:  # a replayed assembly does not count the job twice
            observe_job(job, completed_at, mux_seconds=mux_seconds)
            if quality is not None:
                metrics.JOB_QUALITY_PSNR.observe(quality.psnr_db)
        log.info(
            "job completed",
            job_id=str(job_id),
            status=event.status,
            output_key=assembled.key,
            out_frames=event.out_frame_count,
            size_bytes=assembled.size,
            mux_seconds=round(mux_seconds, 3),
            quality_psnr_db=round(quality.psnr_db, 2) if quality else None,
            worst_chunk=quality.worst_chunk_index if quality else None,
            chunks_below_floor=list(quality.chunks_below_floor) if quality else None,
        )

    def _missing_outputs(self, parts: list[Chunk]) -> list[int]:
        """The chunks whose encoded output is no longer in the work bucket (in a worker thread)."""
        missing = []
        for part in parts:
            try:
                self.storage.stat_object(self.settings.work_bucket, str(part.output_key))
            except S3Error as exc:
                if exc.code not in ("NoSuchKey", "NoSuchObject"):
                    raise
                missing.append(part.chunk_index)
        return missing

    async def _redo(self, job_id: uuid.UUID, missing: list[int]) -> None:
        """Make lost chunk outputs again instead of failing the job: the source is still there.

        A job that waited longer than the work bucket's lifecycle rule (`WORK_RETENTION_DAYS`) lost
        its oldest chunks' outputs; failing it as "source gone" would be wrong and waste the rest.
        """
        async with transaction(self.sessions) as session:
            specs = await chunks.redo(session, job_id, missing)
            done = await chunks.done_count(session, job_id)
            reopened = await jobs.reopen_for_chunks(session, job_id, owner=self.owner, done=done)
            if not reopened:
                raise AssemblyLost(
                    f"the assembly claim on job {job_id} was lost before its chunks were redone"
                )
        for spec in specs:
            await self.publish(Topic.CHUNK_READY, spec, key=f"{spec.job_id}/{spec.chunk_index}")
        metrics.CHUNKS_REDONE.inc(len(specs))
        log.warning(
            "chunk outputs were gone before assembly (expired from the work bucket?); making them again",
            job_id=str(job_id),
            chunks=missing,
        )

    def _build(
        self, job: Job, plan: JobSplit, parts: list[Chunk], key: str, lost: threading.Event | None = None
    ) -> Assembled:
        """Download, concatenate, mux with the source's audio, measure and upload (in a worker thread).

        Between steps it stops (`AssemblyLost`) once `lost` is set: above all, it never uploads then.
        """

        def still_ours(step: str) -> None:
            if lost is not None and lost.is_set():
                raise AssemblyLost(f"the assembly claim on job {job.id} was lost; stopped before {step}")

        workdir = self.settings.scratch_dir / str(job.id)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            paths = []
            for part in parts:
                still_ours("downloading the chunks")
                path = workdir / f"{part.chunk_index:05d}.mkv"
                self.storage.fget_object(self.settings.work_bucket, str(part.output_key), str(path))
                paths.append(path)
            source = workdir / "source"
            fetch_source(
                self.storage,
                job.source_bucket,
                job.source_key,
                source,
                version_id=job.source_version,
                etag=job.source_etag,
                streams=self.settings.download_streams,
            )
            crash_point(self.settings, "muxer.assemble", job.source_key)
            still_ours("concatenating")
            time_base, stamps = output_stamps(plan)
            video = workdir / "video.mp4"
            rate = Fraction(plan.out_fps_num, plan.out_fps_den)
            concatenate(paths, [int(p.frames_out or 0) for p in parts], rate, video, time_base, stamps)
            output = workdir / f"output.{plan.container}"
            command = remux_command(
                video,
                source,
                output,
                probe_streams(source),
                timescale=time_base.denominator,
                rotation=job.probe.rotation if job.probe else 0,
                container=plan.container,
            )
            still_ours("muxing")
            run_ffmpeg(command, self.settings.ffmpeg_timeout_s)
            measured, tracks = measure_output(output)
            size = output.stat().st_size
            still_ours("uploading")
            self.storage.fput_object(
                self.settings.output_bucket, key, str(output), content_type=CONTENT_TYPES[plan.container]
            )
            return Assembled(key=key, size=size, measured=measured, tracks=tuple(tracks))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _delete_work(self, job_id: uuid.UUID) -> None:
        removed = await asyncio.to_thread(
            delete_prefix, self.storage, self.settings.work_bucket, f"{job_id}/"
        )
        metrics.WORK_OBJECTS_DELETED.inc(removed)
