"""`video.uploaded` → lossless chunks in the work bucket, `chunk.ready` × N and `job.split`.

Idempotent: the plan is deterministic, chunk objects are overwritten with identical content, chunk rows
are keyed by (job_id, chunk_index), and a replay of an already split job only re-announces the
chunks that are not done yet (a crash between the database commit and the announcements loses nothing).
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col

from infiniteflow_common import jobs
from infiniteflow_common.db import FINAL_STATUSES, Chunk, ChunkStatus, JobStatus, transaction
from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.events import ChunkReady, JobSplit, OutputSlot, VideoUploaded, decode_event
from infiniteflow_common.failures import job_fails_on
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.media import LosslessWriter, MediaError, decode_video, rational
from infiniteflow_common.observability import get_logger
from infiniteflow_common.timing import output_rate
from infiniteflow_common.topics import Topic, topic_specs
from services.splitter import metrics
from services.splitter.cfr import average_rate, cfr_sources, is_variable
from services.splitter.config import SplitterSettings
from services.splitter.duplicates import DuplicateDetector, kept_frames, kept_scene_starts
from services.splitter.plan import JobPlan, plan_job
from services.splitter.scenes import SceneCuts, small_bgr

log = get_logger()


@dataclass(frozen=True)
class Analysis:
    """What one decode pass learned: frame timestamps, scene starts (in CFR indices), rate."""

    rate: Fraction
    source_of: list[int]  # planning frame index → decoded frame index
    scene_starts: list[int]
    vfr_converted: bool
    # With duplicates skipped: each planning frame's position on the input timeline (in frames) and
    # the input's frame count; None / 0 when every frame is planned.
    positions: list[Fraction] | None = None
    input_frames: int = 0
    # Variable-rate input kept as it is: every decoded frame's timestamp in ticks of `time_base`,
    # from the first frame (the muxer stamps the output between them); None when constant.
    pts: list[int] | None = None
    time_base: Fraction | None = None


def spec_offset(job_id: uuid.UUID, partitions: int) -> int:
    """Where a job's first chunk goes, so concurrent jobs do not all start on partition 0."""
    return job_id.int % partitions


def chunk_key(job_id: uuid.UUID, index: int) -> str:
    """Object key of a source chunk in the work bucket."""
    return f"{job_id}/chunks/{index:05d}.mkv"


class SplitHandler(PipelineHandler):
    """Plans and writes one job's chunks."""

    def __init__(self, *, settings: SplitterSettings, deps: Deps) -> None:
        super().__init__(deps)
        self.settings = settings

    async def __call__(self, delivery: Delivery) -> None:
        """Handle one `video.uploaded` record."""
        event = decode_event(self.catalog, delivery.value, VideoUploaded)
        async with transaction(self.sessions) as session:
            job = await jobs.get_job(session, event.job_id)
        if job is None or job.status in FINAL_STATUSES:
            log.info("nothing to split", job_id=str(event.job_id), status=job.status if job else None)
            return
        if job.split_at is not None:
            await self._announce(event, await self._pending_chunks(event.job_id), job.plan or {})
            return
        async with job_fails_on(self.sessions, self.publish, job_id=event.job_id, stage="splitter"):
            await self._split(event, dedupe=bool((job.output_options or {}).get("dedupe")))

    async def _split(self, event: VideoUploaded, *, dedupe: bool = False) -> None:
        started = time.perf_counter()
        async with transaction(self.sessions) as session:
            await jobs.advance(session, event.job_id, JobStatus.SPLITTING, progress=5)
        workdir = self.settings.scratch_dir / str(event.job_id)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            source = workdir / "source"
            self.storage.fget_object(event.bucket, event.key, str(source))
            probe = event.probe
            params = event.params
            analysis = self._analyse(
                source,
                probe.avg_fps_num or probe.fps_num,
                probe.avg_fps_den or probe.fps_den,
                dedupe=dedupe,
                # a multiplier keeps a variable rate (frames between the real ones); a target rate is CFR
                keep_vfr=params.multiplier is not None,
            )
            target = Fraction(params.target_fps) if params.target_fps else None
            out_rate = output_rate(analysis.rate, multiplier=params.multiplier, fps=target)
            plan = plan_job(
                len(analysis.source_of),
                analysis.rate,
                out_rate,
                analysis.scene_starts,
                self.settings.chunk_frames,
                positions=analysis.positions,
                input_frames=analysis.input_frames or None,
            )
            specs = self._write_chunks(event, source, workdir, plan, analysis)
            # scene cuts as the user counts frames: input frame indices, whatever was skipped
            positions = analysis.positions
            scene_starts = [int(positions[s]) if positions else s for s in plan.scene_starts]
            plan_doc = {
                "in_rate": f"{plan.in_rate.numerator}/{plan.in_rate.denominator}",
                "out_rate": f"{plan.out_rate.numerator}/{plan.out_rate.denominator}",
                "source_frames": plan.input_frames or plan.source_frames,
                "out_frames": plan.out_frames,
                "scene_starts": scene_starts,
                "vfr_converted": analysis.vfr_converted,
                "chunk_count": len(plan.chunks),
                "duplicates_skipped": (plan.input_frames or plan.source_frames) - plan.source_frames,
                "vfr_kept": analysis.pts is not None,
            }
            if analysis.pts is not None and analysis.time_base is not None:
                plan_doc["time_base"] = str(analysis.time_base)
                plan_doc["pts"] = analysis.pts
            await self._record(event.job_id, plan, specs, plan_doc)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        metrics.SPLIT_SECONDS.observe(time.perf_counter() - started)
        metrics.CHUNKS_PLANNED.inc(len(specs))
        log.info(
            "job split",
            job_id=str(event.job_id),
            chunks=len(specs),
            scene_starts=scene_starts,
            out_frames=plan.out_frames,
            vfr_converted=analysis.vfr_converted,
            duplicates_skipped=plan_doc["duplicates_skipped"],
        )
        await self._announce(event, specs, plan_doc)

    def _analyse(
        self, source: Path, num: int, den: int, *, dedupe: bool = False, keep_vfr: bool = False
    ) -> Analysis:
        """First pass: timestamps, VFR detection, scene cuts and (when asked) duplicated frames."""
        duplicates = DuplicateDetector(self.settings.dedupe_threshold) if dedupe else None
        analysis = self._analyse_timing(source, num, den, duplicates, keep_vfr)
        if duplicates is None:
            return analysis
        kept = kept_frames(analysis.source_of, duplicates.distinct)
        if len(kept) < 2 or len(kept) == len(analysis.source_of):
            return analysis  # a still image, or nothing repeated: plan every frame
        return Analysis(
            analysis.rate,
            [analysis.source_of[c] for c in kept],
            kept_scene_starts(analysis.scene_starts, kept),
            analysis.vfr_converted,
            positions=[Fraction(c) for c in kept],
            input_frames=len(analysis.source_of),
            pts=analysis.pts,
            time_base=analysis.time_base,
        )

    def _analyse_timing(
        self, source: Path, num: int, den: int, duplicates: DuplicateDetector | None, keep_vfr: bool
    ) -> Analysis:
        rate = rational(num, den)
        timestamps: list[Fraction] = []
        time_base: Fraction | None = None
        cuts = SceneCuts(rate, self.settings.scene_threshold, self.settings.scene_min_frames)
        index = -1
        for index, frame in enumerate(decode_video(source)):
            time_base = time_base or (Fraction(frame.time_base) if frame.time_base else None)
            timestamps.append(
                Fraction(frame.pts or 0) * Fraction(frame.time_base or 0)
                if frame.pts is not None
                else Fraction(index) / rate
            )
            small = small_bgr(frame, self.settings.scene_width)
            cuts.feed(index, small)
            if duplicates is not None:
                duplicates.feed(small)
        if index < 0:
            raise MediaError("the video stream has no decodable frame", code="E_MEDIA_NO_FRAMES")
        starts = cuts.finish(index)
        if not is_variable(timestamps):
            return Analysis(rate, list(range(len(timestamps))), starts, vfr_converted=False)
        # Containers often misreport a VFR stream's average (Matroska says the nominal rate): measure it.
        rate = average_rate(timestamps)
        if keep_vfr and time_base:
            ticks = [(ts - timestamps[0]) / time_base for ts in timestamps]
            if all(t.denominator == 1 and t >= 0 for t in ticks) and ticks == sorted(set(ticks)):
                frames = list(range(len(timestamps)))
                return Analysis(
                    rate,
                    frames,
                    starts,
                    vfr_converted=False,
                    pts=[int(t) for t in ticks],
                    time_base=time_base,
                )
        source_of = cfr_sources(timestamps, rate)
        first_cfr: dict[int, int] = {}
        for cfr_index, decoded in enumerate(source_of):
            first_cfr.setdefault(decoded, cfr_index)
        cfr_starts = sorted({first_cfr[s] for s in starts if s in first_cfr})
        return Analysis(rate, source_of, cfr_starts, vfr_converted=True)

    def _write_chunks(
        self, event: VideoUploaded, source: Path, workdir: Path, plan: JobPlan, analysis: Analysis
    ) -> list[ChunkReady]:
        """Second pass: every chunk as lossless FFV1, uploaded to the work bucket."""
        # decoded frame index → the CFR indices that show it (usually exactly one)
        wanted: dict[int, list[int]] = {}
        for cfr_index, decoded in enumerate(analysis.source_of):
            wanted.setdefault(decoded, []).append(cfr_index)
        # CFR index → chunks containing it (two for a shared frame)
        owners: dict[int, list[int]] = {}
        for chunk in plan.chunks:
            for cfr_index in range(chunk.first_frame, chunk.first_frame + chunk.frame_count):
                owners.setdefault(cfr_index, []).append(chunk.index)
        writers: dict[int, LosslessWriter] = {}
        specs: list[ChunkReady] = []
        pix_fmt = width = height = None
        for decoded, frame in enumerate(decode_video(source)):
            pix_fmt, width, height = frame.format.name, frame.width, frame.height
            for cfr_index in wanted.get(decoded, []):
                for chunk_index in owners.get(cfr_index, []):
                    if chunk_index not in writers:
                        writers[chunk_index] = LosslessWriter(
                            workdir / f"{chunk_index}.mkv",
                            width=width,
                            height=height,
                            pix_fmt=pix_fmt,
                            rate=plan.in_rate,
                        )
                    writer = writers[chunk_index]
                    writer.write(frame)
                    chunk = plan.chunks[chunk_index]
                    if writer.count == chunk.frame_count:
                        writer.close()
                        self.storage.fput_object(
                            self.settings.work_bucket,
                            chunk_key(event.job_id, chunk_index),
                            str(writer.path),
                            content_type="video/x-matroska",
                        )
                        writer.path.unlink()
                        del writers[chunk_index]
                        specs.append(self._spec(event, plan, chunk_index, width, height, pix_fmt))
        if writers or len(specs) != len(plan.chunks):
            raise MediaError(
                f"the second decode produced fewer frames than the first ({len(specs)}/{len(plan.chunks)} chunks)",
                code="E_MEDIA_CORRUPT",
            )
        return sorted(specs, key=lambda s: s.chunk_index)

    def _spec(
        self, event: VideoUploaded, plan: JobPlan, index: int, width: int, height: int, pix_fmt: str
    ) -> ChunkReady:
        chunk = plan.chunks[index]
        return ChunkReady(
            job_id=event.job_id,
            chunk_index=index,
            chunk_count=len(plan.chunks),
            object_key=chunk_key(event.job_id, index),
            first_frame=chunk.first_frame,
            frame_count=chunk.frame_count,
            first_output_frame=chunk.first_output_frame,
            shares_last_frame=chunk.shares_last_frame,
            ends_scene=chunk.ends_scene,
            timesteps=tuple(OutputSlot(source_offset=s.source_index, t=float(s.t)) for s in chunk.slots),
            engine=event.params.engine,
            quality=event.params.quality,
            width=width,
            height=height,
            pix_fmt=pix_fmt,
            attempt=1,
        )

    async def _record(
        self, job_id: uuid.UUID, plan: JobPlan, specs: list[ChunkReady], plan_doc: dict[str, Any]
    ) -> None:
        async with transaction(self.sessions) as session:
            for spec in specs:
                await session.execute(
                    insert(Chunk)
                    .values(
                        job_id=job_id,
                        chunk_index=spec.chunk_index,
                        first_frame=spec.first_frame,
                        frame_count=spec.frame_count,
                        status=ChunkStatus.PENDING.value,
                        spec=spec.to_avro() | {"job_id": str(job_id)},
                    )
                    .on_conflict_do_nothing()
                )
            await jobs.advance(
                session,
                job_id,
                JobStatus.INTERPOLATING,
                progress=15,
                chunks_total=len(specs),
                split_at=datetime.now(UTC),
                plan=plan_doc,
            )

    async def _pending_chunks(self, job_id: uuid.UUID) -> list[ChunkReady]:
        async with transaction(self.sessions) as session:
            rows = (
                await session.execute(
                    select(Chunk).where(
                        col(Chunk.job_id) == job_id, col(Chunk.status) != ChunkStatus.DONE.value
                    )
                )
            ).scalars()
            return [ChunkReady.from_avro(dict(row.spec)) for row in rows if row.spec]

    async def _announce(
        self, event: VideoUploaded, specs: list[ChunkReady], plan_doc: dict[str, Any]
    ) -> None:
        partitions = topic_specs()[Topic.CHUNK_READY].partitions
        offset = spec_offset(event.job_id, partitions)
        for spec in specs:
            # Consecutive chunks go to consecutive partitions (not by key hash), so every worker of the
            # group gets an even share of a job instead of whatever the hash happens to give it.
            await self.publish(
                Topic.CHUNK_READY,
                spec,
                key=f"{spec.job_id}/{spec.chunk_index}",
                partition=(offset + spec.chunk_index) % partitions,
            )
        if not plan_doc:
            return
        in_rate, out_rate = Fraction(plan_doc["in_rate"]), Fraction(plan_doc["out_rate"])
        await self.publish(
            Topic.JOB_SPLIT,
            JobSplit(
                job_id=event.job_id,
                chunk_count=plan_doc["chunk_count"],
                source_frame_count=plan_doc["source_frames"],
                in_fps_num=in_rate.numerator,
                in_fps_den=in_rate.denominator,
                out_fps_num=out_rate.numerator,
                out_fps_den=out_rate.denominator,
                out_frame_count=plan_doc["out_frames"],
                scene_cuts=tuple(plan_doc["scene_starts"]),
                vfr_converted=plan_doc["vfr_converted"],
                split_at=datetime.now(UTC),
            ),
        )
