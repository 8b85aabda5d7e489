"""`video.uploaded` → a plan: `chunk.ready` × N (frame ranges of the pinned source) and `job.split`.

The splitter never writes the video again: one downscaled pass finds the frames' timing, the scene
cuts and (with dedupe) the repeated frames; the plan names each chunk's frames in the source object
ingest probed (its version id and ETag), and each worker reads and encodes its own range. The pass
runs in a worker thread, so health checks and the consumer's polling never wait on a long source.

Idempotent: the plan is deterministic, chunk rows are keyed by (job_id, chunk_index), and a replay of
an already split job only re-announces the chunks that are not done yet (a crash between the database
commit and the announcements loses nothing).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

from infiniteflow_common import chunks, jobs
from infiniteflow_common.db import FINAL_STATUSES, Job, JobStatus, transaction
from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.encoding import encoding_for, probe_hdr
from infiniteflow_common.events import ChunkReady, JobSplit, VideoUploaded, decode_event
from infiniteflow_common.failures import job_fails_on
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.observability import get_logger
from infiniteflow_common.output import OutputOptions
from infiniteflow_common.storage import delete_prefix, fetch_source
from infiniteflow_common.timing import output_rate
from infiniteflow_common.topics import Topic, topic_specs
from services.splitter import metrics
from services.splitter.analysis import AnalysisSettings, analyse
from services.splitter.config import SplitterSettings
from services.splitter.plan import frames_for_work, plan_job
from services.splitter.specs import chunk_specs, job_split

log = get_logger()


def spec_offset(job_id: uuid.UUID, partitions: int) -> int:
    """Where a job's first chunk goes, so concurrent jobs do not all start on partition 0."""
    return job_id.int % partitions


@dataclass(frozen=True)
class Split:
    """A job's plan: the chunk announcements and the job-level record."""

    chunks: list[ChunkReady]
    plan: JobSplit


class SplitHandler(PipelineHandler):
    """Plans one job's chunks."""

    def __init__(self, *, settings: SplitterSettings, deps: Deps) -> None:
        super().__init__(deps)
        self.settings = settings

    async def __call__(self, delivery: Delivery) -> None:
        """Handle one `video.uploaded` record."""
        event = decode_event(self.catalog, delivery.value, VideoUploaded)
        async with transaction(self.sessions) as session:
            job = await jobs.get_job(session, event.job_id)
            pending = await chunks.pending_specs(session, event.job_id) if job and job.split_at else []
        if job is None or job.status in FINAL_STATUSES:
            log.info("nothing to split", job_id=str(event.job_id), status=job.status if job else None)
            return
        if job.split_at is not None:
            plan = JobSplit.model_validate(job.plan) if job.plan else None
            await self._announce(event.job_id, pending, plan)
            return
        async with job_fails_on(
            self.sessions, self.publish, job_id=event.job_id, stage="splitter", cleanup=self._cleanup
        ):
            split = await self._split(event)
        await self._announce(event.job_id, split.chunks, split.plan)

    async def _split(self, event: VideoUploaded) -> Split:
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        async with transaction(self.sessions) as session:
            # Ingest publishes video.uploaded inside the transaction that records the resolved output
            # options (codec, container), under the row's lock: waiting for that lock here reads them
            # as committed, not as they stood before the probe.
            job = await session.get(Job, event.job_id, with_for_update=True, populate_existing=True)
            await jobs.advance(
                session, event.job_id, JobStatus.SPLITTING, progress=5, split_started_at=started_at
            )
        options = OutputOptions.model_validate((job.output_options if job else None) or {})
        split = await asyncio.to_thread(self._plan, event, options, started_at)
        async with transaction(self.sessions) as session:
            await chunks.insert_planned(session, event.job_id, split.chunks)
            await jobs.advance(
                session,
                event.job_id,
                JobStatus.INTERPOLATING,
                progress=15,
                chunks_total=len(split.chunks),
                split_at=split.plan.split_at,
                plan=split.plan.model_dump(mode="json"),
            )
        metrics.SPLIT_SECONDS.observe(time.perf_counter() - started)
        metrics.CHUNKS_PLANNED.inc(len(split.chunks))
        log.info(
            "job planned",
            job_id=str(event.job_id),
            chunks=len(split.chunks),
            scene_starts=list(split.plan.scene_cuts),
            out_frames=split.plan.out_frame_count,
            vfr_converted=split.plan.vfr_converted,
            duplicates_skipped=split.plan.duplicates_skipped,
            seconds=round(time.perf_counter() - started, 3),
        )
        return split

    def _plan(self, event: VideoUploaded, options: OutputOptions, started_at: datetime) -> Split:
        """Read the source once (in a worker thread) and decide every chunk."""
        workdir = self.settings.scratch_dir / str(event.job_id)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            source = workdir / "source"
            fetch_source(
                self.storage, event.bucket, event.key, source, version_id=event.version_id, etag=event.etag
            )
            probe, params = event.probe, event.params
            analysis = analyse(
                source,
                probe.avg_fps_num or probe.fps_num,
                probe.avg_fps_den or probe.fps_den,
                AnalysisSettings(
                    self.settings.scene_threshold,
                    self.settings.scene_min_frames,
                    self.settings.scene_width,
                    self.settings.dedupe_threshold,
                ),
                dedupe=options.dedupe,
                # a multiplier keeps a variable rate (frames between the real ones); a target rate is CFR
                keep_vfr=params.multiplier is not None,
            )
            hdr = probe_hdr(source)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        target = Fraction(params.target_fps) if params.target_fps else None
        out_rate = output_rate(analysis.rate, multiplier=params.multiplier, fps=target)
        plan = plan_job(
            len(analysis.source_of),
            analysis.rate,
            out_rate,
            analysis.scene_starts,
            self._chunk_frames(analysis.width, analysis.height, analysis.rate, out_rate, params.engine),
            positions=analysis.positions,
            input_frames=analysis.input_frames or None,
        )
        encoding = encoding_for(
            options,
            probe.model_dump(),
            hdr,
            x264_crf=self.settings.x264_crf,
            x264_preset=self.settings.x264_preset,
        )
        model = str(getattr(params, "model", "auto"))
        return Split(
            chunks=chunk_specs(event, plan, analysis, encoding, model=model),
            plan=job_split(
                event.job_id,
                plan,
                analysis,
                encoding,
                started_at=started_at,
                split_at=datetime.now(UTC),
                container=options.container,
            ),
        )

    def _chunk_frames(
        self, width: int, height: int, in_rate: Fraction, out_rate: Fraction, engine: str
    ) -> int:
        if self.settings.chunk_frames is not None:
            return self.settings.chunk_frames
        return frames_for_work(
            width=width,
            height=height,
            in_rate=in_rate,
            out_rate=out_rate,
            engine_pixels_per_s=self.settings.engine_mpix_per_s.get(engine, 1.0) * 1e6,
            target_s=self.settings.chunk_target_s,
            min_frames=self.settings.chunk_min_frames,
            max_frames=self.settings.chunk_max_frames,
        )

    async def _cleanup(self, job_id: uuid.UUID) -> None:
        await asyncio.to_thread(self._delete_work, job_id)

    def _delete_work(self, job_id: uuid.UUID) -> None:
        delete_prefix(self.storage, self.settings.work_bucket, f"{job_id}/")

    async def _announce(self, job_id: uuid.UUID, specs: list[ChunkReady], plan: JobSplit | None) -> None:
        partitions = topic_specs()[Topic.CHUNK_READY].partitions
        offset = spec_offset(job_id, partitions)
        for spec in specs:
            # Consecutive chunks go to consecutive partitions (not by key hash), so every worker of the
            # group gets an even share of a job instead of whatever the hash happens to give it.
            await self.publish(
                Topic.CHUNK_READY,
                spec,
                key=f"{spec.job_id}/{spec.chunk_index}",
                partition=(offset + spec.chunk_index) % partitions,
            )
        if plan is not None:
            await self.publish(Topic.JOB_SPLIT, plan)
