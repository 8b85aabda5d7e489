"""`chunk.ready` → an interpolated chunk in the work bucket and `chunk.interpolated`.

A worker claims the chunk in PostgreSQL with a lease (epoch + expiry) and renews it while it works.
Another worker can take the chunk over only once the lease has expired; it then gets a higher epoch.
Results carry their epoch and are written under an epoch-specific key, so a late result from an
evicted worker neither overwrites nor counts: the muxer accepts only the current epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from sqlalchemy import or_, update
from sqlmodel import col

from infiniteflow_common import jobs
from infiniteflow_common.db import FINAL_STATUSES, Chunk, ChunkStatus, transaction, utcnow
from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.errors import HandedBack, TransientError
from infiniteflow_common.events import ChunkInterpolated, ChunkReady, decode_event
from infiniteflow_common.failures import job_fails_on
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.observability import get_logger
from infiniteflow_common.topics import Topic
from services.gpu_interp import metrics
from services.gpu_interp.chunk_work import ChooseModel, SlotSpec, exact_t, interpolate_with_retries
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.drain import Drain
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.engines.base import InterpolationEngine
from services.gpu_interp.engines.models import AUTO, MODELS, check_choice
from services.gpu_interp.memory import MemoryStep
from services.gpu_interp.model_choice import AutoModel, FrameSource, ModelChoice
from services.gpu_interp.quality import sample_count

log = get_logger()


def result_key(job_id: uuid.UUID, index: int, epoch: int) -> str:
    """Object key of an interpolated chunk; the epoch keeps a fenced worker from overwriting it."""
    return f"{job_id}/interp/{index:05d}-e{epoch}.mkv"


class LeaseLost(TransientError):  # noqa: N818 - a state, not an error class name
    """Another worker took the chunk over; this worker's result must be discarded."""

    code = "E_LEASE_LOST"


class ChunkHandler(PipelineHandler):
    """Claims, interpolates and reports one chunk."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        deps: Deps,
        engines: EngineCache,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(deps)
        self.settings = settings
        self.engines = engines
        self.stopping = stopping

    async def __call__(self, delivery: Delivery) -> None:
        """Handle one `chunk.ready` record."""
        spec = decode_event(self.catalog, delivery.value, ChunkReady)
        bound = log.bind(job_id=str(spec.job_id), chunk_index=spec.chunk_index, stage="gpu_interp")
        async with transaction(self.sessions) as session:
            job = await jobs.get_job(session, spec.job_id)
        if job is None or job.status in FINAL_STATUSES:
            bound.info("chunk of a finished job skipped", status=job.status if job else None)
            return
        epoch = await self._claim(spec)
        if epoch is None:
            bound.info("chunk already done; skipped")
            return
        failing = job_fails_on(
            self.sessions, self.publish, job_id=spec.job_id, stage="gpu_interp", chunk_index=spec.chunk_index
        )
        async with failing:
            # The job's RIFE model (params of jobs from before models existed have none: auto); an
            # unknown one fails the job with E_PARAM_INVALID.
            # TODO(issue 14): ChunkReady.v2 carries `model`; read it from the event then.
            model = check_choice(str(job.params.get("model") or AUTO))
            with metrics.BUSY.track_inprogress():
                await self._work(spec, epoch, bound, model)

    async def _claim(self, spec: ChunkReady) -> int | None:
        """Take the chunk's lease, waiting out another worker's live lease; None when the chunk is done.

        A chunk re-read after a rebalance is usually still leased by the worker that was evicted (killed,
        stopped, partitioned away). Its lease stops being renewed, so waiting until it expires — at most
        one lease period, well inside max.poll.interval.ms — lets this worker take over with a new epoch.
        """
        for _ in range(3):
            epoch, holder = await self._try_claim(spec)
            if epoch is not None or holder is None:
                return epoch
            wait = (holder - utcnow()).total_seconds() + 0.5
            log.info(
                "chunk leased by another worker; waiting for its lease", job_id=str(spec.job_id),
                chunk_index=spec.chunk_index, wait_s=round(wait, 1),
            )  # fmt: skip
            await asyncio.sleep(min(max(wait, 0.1), self.settings.lease_seconds + 1))
        raise TransientError(
            f"chunk {spec.chunk_index} of job {spec.job_id} is still leased by another worker"
        )

    async def _try_claim(self, spec: ChunkReady) -> tuple[int | None, datetime | None]:
        """(new epoch, None) when claimed; (None, None) when done; (None, lease expiry) when leased."""
        now = utcnow()
        async with transaction(self.sessions) as session:
            result = await session.execute(
                update(Chunk)
                .where(col(Chunk.job_id) == spec.job_id, col(Chunk.chunk_index) == spec.chunk_index)
                .where(
                    or_(
                        col(Chunk.status) == ChunkStatus.PENDING.value,
                        (col(Chunk.status) == ChunkStatus.CLAIMED.value)
                        & (col(Chunk.lease_expires_at) < now),
                        (col(Chunk.status) == ChunkStatus.CLAIMED.value)
                        & (col(Chunk.worker) == self.settings.worker_id),
                    )
                )
                .values(
                    status=ChunkStatus.CLAIMED.value,
                    worker=self.settings.worker_id,
                    lease_epoch=col(Chunk.lease_epoch) + 1,
                    lease_expires_at=now + timedelta(seconds=self.settings.lease_seconds),
                    attempts=col(Chunk.attempts) + 1,
                    started_at=now,
                )
                .returning(col(Chunk.lease_epoch))
            )
            epoch = result.scalar_one_or_none()
            if epoch is not None:
                return int(epoch), None
            row = await session.get(Chunk, (spec.job_id, spec.chunk_index))
        if row is None:
            raise TransientError(f"chunk {spec.chunk_index} of job {spec.job_id} is not recorded yet")
        if row.status == ChunkStatus.DONE.value:
            return None, None
        return None, row.lease_expires_at or utcnow()

    async def _renew(self, spec: ChunkReady, epoch: int) -> bool:
        async with transaction(self.sessions) as session:
            result = await session.execute(
                update(Chunk)
                .where(col(Chunk.job_id) == spec.job_id, col(Chunk.chunk_index) == spec.chunk_index)
                .where(col(Chunk.lease_epoch) == epoch, col(Chunk.status) == ChunkStatus.CLAIMED.value)
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.settings.lease_seconds))
            )
            return bool(getattr(result, "rowcount", 0))

    async def _release(self, spec: ChunkReady, epoch: int) -> None:
        """Give the chunk back at once (this worker is stopping), so the next claim need not wait."""
        async with transaction(self.sessions) as session:
            await session.execute(
                update(Chunk)
                .where(col(Chunk.job_id) == spec.job_id, col(Chunk.chunk_index) == spec.chunk_index)
                .where(col(Chunk.lease_epoch) == epoch, col(Chunk.status) == ChunkStatus.CLAIMED.value)
                .values(status=ChunkStatus.PENDING.value, worker=None, lease_expires_at=None)
            )
        log.info("chunk handed back", job_id=str(spec.job_id), chunk_index=spec.chunk_index, epoch=epoch)

    async def _keep_lease(self, spec: ChunkReady, epoch: int, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                if not await self._renew(spec, epoch):
                    lost.set()
                    return
            except Exception as exc:  # a database hiccup: the lease has slack for the next try
                log.warning("lease renewal failed", job_id=str(spec.job_id), error=str(exc))

    def _engine_for(self, spec: ChunkReady, model: str) -> tuple[InterpolationEngine, ChooseModel | None]:
        """The chunk's engine; for `rife` with `model=auto`, both models and the hook that picks one."""
        if spec.engine != "rife" or model != AUTO:
            return self.engines.get(spec.engine, spec.quality, model), None
        auto = AutoModel({name: self.engines.get("rife", spec.quality, name) for name in MODELS})
        s = self.settings

        def choose(
            frame: FrameSource, count: int, pair_times: Mapping[int, Sequence[Fraction]]
        ) -> ModelChoice:
            # the self-check's own samples: the chosen model's check replaces them
            free = sample_count(count, len(pair_times), s.quality_budget, s.quality_samples)
            return auto.choose(
                frame,
                count,
                pair_times,
                budget=s.model_choice_budget,
                batch_size=s.batch_size,
                free_samples=free,
            )

        return auto, choose

    async def _work(self, spec: ChunkReady, epoch: int, bound: object, model: str = AUTO) -> None:
        workdir = self.settings.scratch_dir / f"{spec.job_id}-{spec.chunk_index}-{epoch}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(spec, epoch, lost))
        try:
            source, output = workdir / "chunk.mkv", workdir / "interp.mkv"
            # told to stop mid-chunk: finish if it fits the grace period (minus room to upload)
            drain = Drain(self.stopping, budget_s=self.settings.shutdown_grace_s * 0.7)

            def on_retry(failed: MemoryStep, following: MemoryStep, error: BaseException) -> None:
                metrics.OOM_RETRIES.labels(spec.engine).inc()
                log.warning(
                    "chunk ran out of memory; retrying lighter",
                    job_id=str(spec.job_id),
                    chunk_index=spec.chunk_index,
                    scale=failed.scale,
                    batch_size=failed.batch_size,
                    next_scale=following.scale,
                    next_batch_size=following.batch_size,
                    error=str(error)[:300],
                )

            try:
                await asyncio.to_thread(
                    self.storage.fget_object, self.settings.work_bucket, spec.object_key, str(source)
                )
                engine, choose = await asyncio.to_thread(self._engine_for, spec, model)
                drain.check(0, 1)  # told to stop while getting ready: hand back before starting
                started = time.perf_counter()
                slots = [SlotSpec(s.source_offset, exact_t(s.t)) for s in spec.timesteps]
                outcome = await asyncio.to_thread(
                    interpolate_with_retries,
                    engine,
                    source,
                    output,
                    slots,
                    width=spec.width,
                    height=spec.height,
                    min_scale=self.settings.min_scale,
                    on_retry=on_retry,
                    expected_frames=spec.frame_count,
                    # intermediates carry frames in order; the muxer stamps the exact output rate
                    out_rate=Fraction(1),
                    batch_size=self.settings.batch_size,
                    quality_budget=self.settings.quality_budget,
                    quality_samples=self.settings.quality_samples,
                    on_batch=drain.check,
                    choose=choose,
                )
            except (HandedBack, asyncio.CancelledError):
                # handing back, or cut short at the end of the grace period: free the chunk either way
                await asyncio.shield(self._release(spec, epoch))
                metrics.CHUNKS.labels("handed_back").inc()
                raise
            seconds = time.perf_counter() - started
            frames_out, quality = outcome.frames_out, outcome.quality
            if lost.is_set() or not await self._renew(spec, epoch):
                metrics.CHUNKS.labels("fenced").inc()
                raise LeaseLost(
                    f"lease of chunk {spec.chunk_index} (epoch {epoch}) was taken over; result discarded"
                )
            key = result_key(spec.job_id, spec.chunk_index, epoch)
            await asyncio.to_thread(
                self.storage.fput_object,
                self.settings.work_bucket,
                key,
                str(output),
                content_type="video/x-matroska",
            )
            await self.publish(
                Topic.CHUNK_INTERPOLATED,
                ChunkInterpolated(
                    job_id=spec.job_id,
                    chunk_index=spec.chunk_index,
                    object_key=key,
                    frames_out=frames_out,
                    worker_id=self.settings.worker_id,
                    lease_epoch=epoch,
                    attempt=spec.attempt,
                    engine=spec.engine,
                    device=str(getattr(engine, "device", "cpu")),
                    scale=outcome.scale or 1.0,
                    interp_seconds=seconds,
                    finished_at=datetime.now(UTC),
                    quality_psnr_db=quality.psnr_db if quality else None,
                    quality_ssim=quality.ssim if quality else None,
                    quality_samples=quality.samples if quality else 0,
                    quality_seconds=quality.seconds if quality else 0.0,
                    batch_size=outcome.batch_size,
                    oom_retries=outcome.oom_retries,
                ),
            )
            metrics.CHUNKS.labels("done").inc()
            # the RIFE model that did the chunk (None: the flow engine has none); for ChunkInterpolated.v3
            chosen = (outcome.model_choice or ModelChoice(model, "job")) if spec.engine == "rife" else None
            if chosen is not None:
                metrics.MODEL_CHOICES.labels(chosen.model, chosen.chosen_by).inc()
                if len(chosen.scores) > 1:
                    ranked = sorted(chosen.scores.values(), reverse=True)
                    metrics.MODEL_CHOICE_MARGIN.observe(ranked[0] - ranked[1])
            metrics.CHUNK_SECONDS.labels(spec.engine).observe(seconds)
            metrics.FRAMES.labels(spec.engine).inc(frames_out)
            check: dict[str, object] = {}
            if quality is not None:
                # the check's cost against the chunk's own work (interpolation, decode, encode)
                cost = quality.seconds / max(1e-9, seconds - quality.seconds)
                metrics.QUALITY_PSNR.labels(spec.engine).observe(quality.psnr_db)
                metrics.QUALITY_COST.observe(cost)
                check = {
                    "quality_psnr_db": round(quality.psnr_db, 2),
                    "quality_ssim": round(quality.ssim, 4),
                    "quality_frames": list(quality.frames),
                    "quality_seconds": round(quality.seconds, 4),
                    "quality_cost_ratio": round(cost, 4),
                }
            if chosen is not None:
                check["model"] = chosen.model
                check["model_chosen_by"] = chosen.chosen_by
                check["model_scores"] = {name: round(score, 2) for name, score in chosen.scores.items()}
                check["model_choice_seconds"] = round(chosen.seconds, 4)
            log.info(
                "chunk interpolated",
                job_id=str(spec.job_id),
                chunk_index=spec.chunk_index,
                epoch=epoch,
                frames_out=frames_out,
                seconds=round(seconds, 3),
                scale=outcome.scale,
                batch_size=outcome.batch_size,
                oom_retries=outcome.oom_retries,
                **check,
            )
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            shutil.rmtree(workdir, ignore_errors=True)
