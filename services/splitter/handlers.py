"""`video.uploaded` → a plan: `chunk.ready` × N (frame ranges of the pinned source) and `job.split`.

The splitter never writes the video again: one downscaled pass finds the frames' timing, the scene
cuts and (with dedupe) the repeated frames; the plan names each chunk's frames in the source object
ingest probed (its version id and ETag), and each worker reads and encodes its own range.

The consumer only records the upload as a split request on the job (`splits`) and commits: a pass
over a long source never holds it. Planners (`SplitPlanner`, a bounded number per process) take
requests under a renewable lease and announce each chunk as soon as the pass has read past it and
past the scene-cut detector's lookahead (`ChunkStream`), so the first chunks of any upload reach the
workers within seconds, whatever its length. A source whose frame rate varies, or a dedupe job, is
planned when the pass ends (its timing is known only then). Cancelling a job stops its pass.

Idempotent: the plan is deterministic, chunk rows are keyed by (job_id, chunk_index), a split taken
over after its planner died announces again only the chunks not done, and a replay of an already
split job only re-announces the chunks that are not done yet.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from infiniteflow_common import chunks, jobs, splits, timing
from infiniteflow_common.classify import is_transient
from infiniteflow_common.db import Job, transaction
from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.domain import FINAL_STATUSES, JobStatus
from infiniteflow_common.encoding import encoding_for, probe_hdr
from infiniteflow_common.errors import InfiniteFlowError
from infiniteflow_common.events import ChunkReady, JobSplit, VideoUploaded, decode_event
from infiniteflow_common.failures import job_fails_on, report_failure
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.media import MediaError, rational
from infiniteflow_common.observability import get_logger
from infiniteflow_common.output import OutputOptions
from infiniteflow_common.progress import JobProgress
from infiniteflow_common.remote_media import decode_source
from infiniteflow_common.storage import delete_prefix, source_url
from infiniteflow_common.timing import output_rate
from infiniteflow_common.topics import Topic, topic_specs
from services.splitter import metrics
from services.splitter.analysis import (
    AnalysisSettings,
    PacketRateCheck,
    TimingPass,
    skip_duplicates,
)
from services.splitter.config import SplitterSettings
from services.splitter.duplicates import DuplicateDetector
from services.splitter.plan import ChunkPlan, ChunkStream, JobPlan, frames_for_work, plan_job
from services.splitter.specs import chunk_spec, chunk_specs, plan_event

log = get_logger()

# How often (in frames) a streaming pass asks its planner for chunks that became final.
PLAN_EVERY_FRAMES = 8


def spec_offset(job_id: uuid.UUID, partitions: int) -> int:
    """Where a job's first chunk goes, so concurrent jobs do not all start on partition 0."""
    return job_id.int % partitions


@dataclass(frozen=True)
class Planned:
    """What a split's pass made: the chunk announcements left when it ended, and the job's plan."""

    chunks: list[ChunkReady]
    plan: JobSplit
    streamed: int  # chunks announced while the pass ran


class SplitStopped(Exception):  # noqa: N818 - a state, not a failure of the job
    """The pass stopped before its end: the job was cancelled or ended, or this planner lost its lease.

    Not an `InfiniteFlowError`: nothing about the job failed, so `job_fails_on` lets it through.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SplitsInterrupted(InfiniteFlowError):  # noqa: N818 - reads as the condition it reports
    """The split started `split_max_tries` times and never finished: its planners died each time."""

    code = "E_SPLIT_INTERRUPTED"


class SplitHandler(PipelineHandler):
    """Records each upload as a split request; a replay of a split job re-announces its chunks."""

    def __init__(self, *, deps: Deps, wake: Callable[[], None]) -> None:
        super().__init__(deps)
        self.wake = wake

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
            await announce(self.publish, event.job_id, pending, job.plan)
            return
        async with transaction(self.sessions) as session:
            requested = await splits.request(session, event.job_id, event)
        log.info("split requested", job_id=str(event.job_id), replay=not requested)
        self.wake()


class SplitPlanner(PipelineHandler):
    """Runs requested splits as leased background work, at most `max_concurrent_splits` at once."""

    def __init__(self, *, settings: SplitterSettings, deps: Deps) -> None:
        super().__init__(deps)
        self.settings = settings
        self.owner = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for requests now (one was just recorded)."""
        self._wake.set()

    async def run(self) -> None:
        """Take requests while there is room, until cancelled (then hand the running splits back)."""
        try:
            while True:
                await self._fill()
                self._wake.clear()
                waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
                try:
                    await asyncio.wait(
                        [*waits, *self._running],
                        timeout=self.settings.split_poll_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    for waiting in waits:
                        waiting.cancel()
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _fill(self) -> None:
        while len(self._running) < self.settings.max_concurrent_splits:
            try:
                async with transaction(self.sessions) as session:
                    claimed, exhausted = await splits.claim_next(
                        session,
                        owner=self.owner,
                        lease_s=self.settings.split_lease_s,
                        max_tries=self.settings.split_max_tries,
                    )
                    unannounced = await splits.unannounced(session, owner=self.owner)
            except Exception as exc:  # the database is away: look again at the next poll
                log.warning("split requests not read", error=repr(exc))
                return
            for job_id in exhausted:
                await self._give_up(job_id)
            for job_id in unannounced:
                await self._announce_finished(job_id)
            if claimed is None:
                return
            task = asyncio.create_task(self._run_split(claimed), name=f"split-{claimed.job_id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            metrics.SPLITS_RUNNING.set(len(self._running))

    async def _give_up(self, job_id: uuid.UUID) -> None:
        error = SplitsInterrupted(
            f"the split started {self.settings.split_max_tries} times and was interrupted each time "
            "(its splitter stopped or lost its lease); not started again"
        )
        await report_failure(
            self.sessions,
            self.publish,
            job_id=job_id,
            stage="splitter",
            code=error.code,
            message=error.message,
        )

    async def _announce_finished(self, job_id: uuid.UUID) -> None:
        """Announce a split whose planner committed it and died before announcing it."""
        async with transaction(self.sessions) as session:
            job = await jobs.get_job(session, job_id)
            pending = await chunks.pending_specs(session, job_id)
        if job is None or job.plan is None:
            return
        await announce(self.publish, job_id, pending, job.plan)
        async with transaction(self.sessions) as session:
            await splits.announced(session, job_id, owner=self.owner)
        log.info("split announced after its planner stopped", job_id=str(job_id), chunks=len(pending))

    async def _run_split(self, claimed: splits.Claimed) -> None:
        job_id = claimed.job_id
        stop = threading.Event()
        renewal = asyncio.create_task(self._renew(job_id, stop))
        try:
            event = claimed.request
            async with job_fails_on(
                self.sessions, self.publish, job_id=job_id, stage="splitter", cleanup=self._cleanup
            ):
                await self._split(event, claimed.tries, stop)
        except SplitStopped as stopped:
            log.info("split stopped", job_id=str(job_id), reason=stopped.message)
        except asyncio.CancelledError:
            stop.set()
            async with transaction(self.sessions) as session:
                await splits.hand_back(session, job_id, owner=self.owner)
            log.info("split handed back on shutdown", job_id=str(job_id))
            raise
        except Exception as exc:
            stop.set()
            if is_transient(exc):
                # The database, the broker or the object store is away: another try takes it over.
                log.warning("split interrupted; its lease will run out", job_id=str(job_id), error=repr(exc))
            else:
                log.exception("split failed unexpectedly", job_id=str(job_id))
                await report_failure(
                    self.sessions,
                    self.publish,
                    job_id=job_id,
                    stage="splitter",
                    code="E_INTERNAL",
                    message=f"the split failed unexpectedly: {exc!r}",
                )
        finally:
            stop.set()
            renewal.cancel()
            metrics.SPLITS_RUNNING.set(max(0, len(self._running) - 1))

    async def _renew(self, job_id: uuid.UUID, stop: threading.Event) -> None:
        """Keep the lease while the pass runs; a lost lease or an ended (cancelled) job stops the pass."""
        while not stop.is_set():
            await asyncio.sleep(self.settings.split_lease_s / 3)
            try:
                async with transaction(self.sessions) as session:
                    held = await splits.renew(
                        session, job_id, owner=self.owner, lease_s=self.settings.split_lease_s
                    )
            except Exception as exc:  # a short database outage: the lease has time left
                log.warning("split lease not renewed", job_id=str(job_id), error=repr(exc))
                continue
            if not held:
                log.info("split lease lost or job ended; stopping its pass", job_id=str(job_id))
                stop.set()

    async def _split(self, event: VideoUploaded, tries: int, stop: threading.Event) -> None:
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        async with transaction(self.sessions) as session:
            # Ingest publishes video.uploaded inside the transaction that records the resolved output
            # options (codec, container), under the row's lock: reading the row now reads them.
            job = await session.get(Job, event.job_id, with_for_update=True, populate_existing=True)
            await jobs.advance(
                session,
                event.job_id,
                JobStatus.SPLITTING,
                progress=JobProgress.SPLITTING,
                split_started_at=started_at,
            )
        options = (job.output_options if job else None) or OutputOptions()
        log.info("split started", job_id=str(event.job_id), attempt=tries)
        loop = asyncio.get_running_loop()
        first_announced: list[float] = []

        def record(specs: list[ChunkReady]) -> None:
            """From the pass's thread: make `specs` durable and announce them before reading on."""
            if stop.is_set():
                raise SplitStopped("the job ended or the split's lease was lost")
            asyncio.run_coroutine_threadsafe(self._record(event.job_id, specs), loop).result()
            if not first_announced:
                first_announced.append(time.perf_counter() - started)
                metrics.FIRST_CHUNK_SECONDS.observe(first_announced[0])
                log.info(
                    "first chunks announced while the pass runs",
                    job_id=str(event.job_id),
                    chunks=len(specs),
                    seconds=round(first_announced[0], 3),
                )

        planned = await asyncio.to_thread(self._plan, event, options, started_at, record, stop)
        await self._record(event.job_id, planned.chunks)
        async with transaction(self.sessions) as session:
            if not await splits.holds(session, event.job_id, owner=self.owner):
                raise SplitStopped("the job ended or the split's lease was lost")
            await jobs.advance(
                session,
                event.job_id,
                JobStatus.INTERPOLATING,
                progress=JobProgress.SPLIT,
                chunks_total=planned.plan.chunk_count,
                split_at=planned.plan.split_at,
                plan=planned.plan,
            )
        await self.publish(Topic.JOB_SPLIT, planned.plan)
        async with transaction(self.sessions) as session:
            await splits.announced(session, event.job_id, owner=self.owner)
        metrics.SPLIT_SECONDS.observe(time.perf_counter() - started)
        metrics.CHUNKS_PLANNED.inc(planned.plan.chunk_count)
        log.info(
            "job planned",
            job_id=str(event.job_id),
            chunks=planned.plan.chunk_count,
            streamed_chunks=planned.streamed,
            first_chunk_s=round(first_announced[0], 3) if first_announced else None,
            scene_starts=list(planned.plan.scene_cuts),
            out_frames=planned.plan.out_frame_count,
            vfr_converted=planned.plan.vfr_converted,
            duplicates_skipped=planned.plan.duplicates_skipped,
            seconds=round(time.perf_counter() - started, 3),
        )

    @staticmethod
    def _constant_rate(known: bool | None, packets: PacketRateCheck | None) -> bool:
        """Ingest's verdict on the source's packet timestamps, else the splitter's own (waited for)."""
        if known is not None:
            return known
        return packets is not None and packets.constant_rate()

    async def _record(self, job_id: uuid.UUID, specs: list[ChunkReady]) -> None:
        """Insert chunks under the lease (fenced: a planner that lost it writes nothing), then announce
        the ones still to do."""
        async with transaction(self.sessions) as session:
            if not await splits.holds(session, job_id, owner=self.owner):
                raise SplitStopped("the job ended or the split's lease was lost")
            await chunks.insert_planned(session, job_id, specs)
            to_do = {spec.chunk_index for spec in await chunks.pending_specs(session, job_id)}
        await announce(self.publish, job_id, [spec for spec in specs if spec.chunk_index in to_do], None)

    def _plan(
        self,
        event: VideoUploaded,
        options: OutputOptions,
        started_at: datetime,
        record: Callable[[list[ChunkReady]], None],
        stop: threading.Event,
    ) -> Planned:
        """Read the source once (in a worker thread), announcing chunks through `record` as they are decided.

        The source is read over a presigned URL of the probed version (`remote_media`), as the workers
        read it: nothing is downloaded first, so the first chunk of a long upload is decided after its
        first frames, not after a copy of the whole file.
        """
        packets: PacketRateCheck | None = None
        try:
            source = source_url(
                self.storage,
                event.bucket,
                event.key,
                version_id=event.version_id,
                expires_s=self.settings.source_url_expiry_s,
            )
            etag = event.etag
            probe, params = event.probe, event.params
            encoding = encoding_for(
                options,
                probe.model_dump(),
                probe_hdr(source, etag=etag),
                x264_crf=self.settings.x264_crf,
                x264_preset=self.settings.x264_preset,
            )
            model = str(getattr(params, "model", "auto"))
            target = Fraction(params.target_fps) if params.target_fps else None
            # whether the source streams: ingest read every packet's timestamp (VideoUploaded v4); from
            # an older producer, ffprobe reads them beside the pass and is waited for at the first chunk
            streams = self.settings.stream_chunks and not options.dedupe
            known = probe.packets_constant_rate
            packets = PacketRateCheck(source, etag=etag) if streams and known is None else None
            streaming = streams and known is not False
            duplicates = DuplicateDetector(self.settings.dedupe_threshold) if options.dedupe else None
            declared = rational(probe.avg_fps_num or probe.fps_num, probe.avg_fps_den or probe.fps_den)
            settings = AnalysisSettings(
                self.settings.scene_threshold,
                self.settings.scene_min_frames,
                self.settings.scene_width,
                self.settings.dedupe_threshold,
            )
            timing_pass = TimingPass(declared, settings, duplicates)
            out_rate = output_rate(declared, multiplier=params.multiplier, fps=target)
            stream: ChunkStream | None = None
            streamed: list[ChunkPlan] = []
            last_pts: int | None = None
            for frame in decode_source(source, etag, self.settings.source_timeout_s):
                if stop.is_set():
                    raise SplitStopped("the job ended or the split's lease was lost")
                if streaming and (frame.pts is None or (last_pts is not None and frame.pts <= last_pts)):
                    if streamed:
                        raise MediaError(
                            "the decoded frames' timestamps disagree with the container's packets "
                            "after chunks were planned from them",
                            code="E_MEDIA_TIMESTAMPS",
                        )
                    streaming = False  # nothing announced yet: plan after the whole pass instead
                last_pts = frame.pts
                timing_pass.feed(frame)
                if not streaming or timing_pass.frames % PLAN_EVERY_FRAMES:
                    continue
                if stream is None:
                    size = self._chunk_frames(
                        timing_pass.width, timing_pass.height, declared, out_rate, params.engine
                    )
                    stream = ChunkStream(declared, out_rate, size)
                decided = stream.advance(timing_pass.known(), timing_pass.cuts.starts)
                if decided and not streamed and not self._constant_rate(known, packets):
                    streaming, stream = False, None  # not constant-rate: plan after the whole pass
                    continue
                if decided:
                    so_far = timing_pass.so_far()
                    record(
                        [
                            chunk_spec(
                                event, c, so_far, encoding, out_rate=out_rate, chunk_count=None, model=model
                            )
                            for c in decided
                        ]
                    )
                    streamed += decided
            # a multiplier keeps a variable rate (frames between the real ones); a target rate is CFR
            analysis = timing_pass.finish(keep_vfr=params.multiplier is not None, constant=bool(streamed))
            if duplicates is not None:
                analysis = skip_duplicates(analysis, duplicates)
        finally:
            if packets is not None:
                packets.close()
        out_rate = output_rate(analysis.rate, multiplier=params.multiplier, fps=target)
        if streamed and stream is not None:
            frames = len(analysis.source_of)
            rest = stream.finish(frames, analysis.scene_starts, timing.plan(frames, analysis.rate, out_rate))
            plan = JobPlan(
                in_rate=analysis.rate,
                out_rate=out_rate,
                source_frames=frames,
                out_frames=timing.output_count(frames, analysis.rate, out_rate),
                scene_starts=stream.scene_starts,
                chunks=(*streamed, *rest),
            )
        else:
            plan = plan_job(
                len(analysis.source_of),
                analysis.rate,
                out_rate,
                analysis.scene_starts,
                self._chunk_frames(analysis.width, analysis.height, analysis.rate, out_rate, params.engine),
                positions=analysis.positions,
                input_frames=analysis.input_frames or None,
            )
        remaining = chunk_specs(event, plan, analysis, encoding, model=model)[len(streamed) :]
        return Planned(
            chunks=remaining,
            plan=plan_event(
                event.job_id,
                plan,
                analysis,
                encoding,
                started_at=started_at,
                split_at=datetime.now(UTC),
                container=options.container,
            ),
            streamed=len(streamed),
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
        await asyncio.to_thread(delete_prefix, self.storage, self.settings.work_bucket, f"{job_id}/")


async def announce(publish: Any, job_id: uuid.UUID, specs: list[ChunkReady], plan: JobSplit | None) -> None:
    """Publish chunk announcements (and the job's plan last, when given)."""
    partitions = topic_specs()[Topic.CHUNK_READY].partitions
    offset = spec_offset(job_id, partitions)
    for spec in specs:
        # Consecutive chunks go to consecutive partitions (not by key hash), so every worker of the
        # group gets an even share of a job instead of whatever the hash happens to give it.
        await publish(
            Topic.CHUNK_READY,
            spec,
            key=f"{spec.job_id}/{spec.chunk_index}",
            partition=(offset + spec.chunk_index) % partitions,
        )
    if plan is not None:
        await publish(Topic.JOB_SPLIT, plan)
