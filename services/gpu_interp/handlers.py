"""`chunk.ready` → the chunk's part of the output, encoded, in the work bucket, and `chunk.interpolated`.

A worker claims the chunk in PostgreSQL with a lease (epoch + expiry) and renews it while it works.
Another worker can take the chunk over only once the lease has expired; it then gets a higher epoch.
Results carry their epoch and are written under an epoch-specific key, so a late result from an
evicted worker neither overwrites nor counts: the muxer accepts only the current epoch.

The work itself is one bounded stream (`chunk_work`): the chunk's frames are read from the pinned
source with ranged reads, interpolated in batches and encoded in the job's final codec as they come.

A claim also decides how the chunk is tried (`poison`): a chunk whose earlier workers died or ran out
their lease is retried, then tried once at the lightest memory settings, then fails its job with
`E_CHUNK_POISON`, so one chunk that kills its worker cannot crash-loop the whole fleet.

How a try ends decides whether it counts. A transient failure (the object store, the database, the
broker; `classify.is_transient`) hands the chunk back with its try: the outside world is to blame. A
permanent one (bad media, a source gone) fails the job at once. Anything else nobody classified — a
`RuntimeError` from CUDA or cuDNN, a `ValueError` or `KeyError` from the codec library — gives the
chunk back with its try counted (`chunks.abandon`), as if the worker had died: such errors tend to
repeat on every worker, and they are exactly what the poison-chunk rule is for. It counts tries in
PostgreSQL, across restarts and rebalances and the whole fleet (a consumer's own retry count is per
process), and its last try at the lightest settings (one frame pair per call, lowest flow scale) is a
real chance for an error that depends on tensor sizes; after that the job fails with E_CHUNK_POISON.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from infiniteflow_common import chunks, dispatch, jobs
from infiniteflow_common.chaos import crash_point
from infiniteflow_common.classify import describe, is_transient
from infiniteflow_common.db import transaction, utcnow
from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.errors import (
    HandedBack,
    InvalidMessage,
    JobScopedError,
    TransientError,
    WorkCancelled,
)
from infiniteflow_common.events import ChunkInterpolated, ChunkReady, SourceRange, decode_event
from infiniteflow_common.failures import job_fails_on, permanent_failure
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.leases import keep_lease
from infiniteflow_common.media import MediaError
from infiniteflow_common.observability import get_logger
from infiniteflow_common.storage import check_source, delete_prefix, source_url
from infiniteflow_common.topics import Topic
from services.gpu_interp import memory_plan, metrics
from services.gpu_interp.chunk_work import ChooseModel, ChunkOutcome, interpolate_with_retries, planned_model
from services.gpu_interp.config import WorkerSettings, default_memory_budget
from services.gpu_interp.drain import Drain
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.engines.base import InterpolationEngine
from services.gpu_interp.engines.models import AUTO, MODELS, check_choice
from services.gpu_interp.media_io import ChunkEncoder, source_frames
from services.gpu_interp.memory import MemoryStep, lightest_step, release_memory
from services.gpu_interp.memory_plan import ChunkShape, MemoryPlan
from services.gpu_interp.model_choice import AutoModel, FrameSource, ModelChoice, warm_up
from services.gpu_interp.poison import AttemptPlan, plan_attempt, poisoned
from services.gpu_interp.preemption import Preemption
from services.gpu_interp.process_memory import current_rss_bytes, peak_rss_bytes, reset_peak

log = get_logger()

SOURCE_READ_CODES = frozenset({"E_MEDIA_CORRUPT", "E_MEDIA_UNREADABLE", "E_CHUNK_FRAME_COUNT"})
"""Decode failures of a source ingest probed as sound: the object may have been deleted or replaced."""


def result_key(job_id: uuid.UUID, index: int, epoch: int) -> str:
    """Object key of an encoded chunk; the epoch keeps a fenced worker from overwriting it."""
    return f"{job_id}/out/{index:05d}-e{epoch}.mkv"


def _refuse_outdated(spec: ChunkReady) -> None:
    """A plan from before workers encoded their own output (ChunkReady v1) cannot be worked on."""
    if spec.source is None or spec.encoding is None or spec.out_fps_num == 0:
        raise InvalidMessage(
            f"chunk {spec.chunk_index} of job {spec.job_id} was planned before workers encoded their "
            "own output (ChunkReady v1); upload the video again",
            code="E_CHUNK_OUTDATED",
        )


class LeaseLost(TransientError):  # noqa: N818 - a state, not an error class name
    """Another worker took the chunk over; this worker's result must be discarded."""

    code = "E_LEASE_LOST"


@dataclass(frozen=True)
class Held:
    """A chunk this worker claimed: its lease epoch, and how it is to be tried (the poison-chunk rule).

    `spec` is the chunk's announcement: the chunk fair dispatch chose, not necessarily the record's.
    """

    epoch: int
    plan: AttemptPlan
    lost_attempts: int
    spec: ChunkReady | None = field(default=None, compare=False)


class ChunkHandler(PipelineHandler):
    """Claims, interpolates, encodes and reports one chunk."""

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
        self.memory_budget = default_memory_budget(settings)
        metrics.MEMORY_BUDGET.set(self.memory_budget)
        self._warm: set[str] = set()  # quality modes whose auto candidates have met the check's shape

    async def __call__(self, delivery: Delivery) -> None:
        """Handle one `chunk.ready` record: claim the fairest chunk to run now, and do it."""
        record = decode_event(self.catalog, delivery.value, ChunkReady)
        _refuse_outdated(record)
        # Warm `auto`'s models up before claiming: a worker told to stop meanwhile holds no chunk yet,
        # and one that claims hands its chunk back within its grace period (the warm-up takes seconds).
        await asyncio.to_thread(self._warm_up_before_claim, record)
        held = await self._claim(record)
        if held is None:
            log.info(
                "nothing to claim: every chunk still to do is held by a live worker",
                job_id=str(record.job_id), chunk_index=record.chunk_index, stage="gpu_interp",
            )  # fmt: skip
            return
        await self._run_claimed(record, held)

    async def _run_claimed(self, record: ChunkReady, held: Held) -> None:
        """Run the chunk `record` claimed; an error raised for another job's chunk names that job.

        Fair dispatch may claim another job's chunk: if its error outlasts the consumer's retries,
        that job fails (`JobScopedError`), not the one whose record rang.
        """
        spec = held.spec or record
        try:
            await self._run(spec, held)
        except (InvalidMessage, HandedBack):
            raise  # the consumer acts on these by their type
        except Exception as exc:
            if spec.job_id == record.job_id:
                raise
            raise JobScopedError(str(spec.job_id), exc) from exc

    async def _run(self, spec: ChunkReady, held: Held, *, in_pause: bool = False) -> None:
        """Work on a claimed chunk; a permanent failure fails its job (`job_fails_on`).

        `in_pause`: the chunk runs in a pause of another chunk in hand (`preemption`).
        """
        failing = job_fails_on(
            self.sessions,
            self.publish,
            job_id=spec.job_id,
            stage="gpu_interp",
            chunk_index=spec.chunk_index,
            cleanup=self._delete_work,
        )
        async with failing:
            _refuse_outdated(spec)
            if held.plan is AttemptPlan.POISON:
                await self._give_up(spec, held)
            with metrics.BUSY.track_inprogress():
                await self._work(
                    spec, held.epoch, conservative=held.plan is AttemptPlan.CONSERVATIVE, in_pause=in_pause
                )

    async def _run_waiting(self, paused: ChunkReady) -> float:
        """Run every chunk owed a worker before `paused`'s job, in a pause of `paused`; seconds paused.

        Called between two batches of `paused` (`Preemption.check`). A chunk run here that fails is
        handled as any chunk's try is (handed back, abandoned, or its job failed); `paused` resumes
        either way, and a worker told to stop resumes it at once (its drain decides the rest).
        """
        started = time.perf_counter()
        ran = 0
        while not self.stopping():
            try:
                async with transaction(self.sessions) as session:
                    got = await dispatch.claim_preempting(
                        session,
                        paused,
                        worker_id=self.settings.worker_id,
                        lease_s=self.settings.lease_seconds,
                    )
            except Exception as exc:  # a database hiccup: the chunk in hand goes on; the next batch asks
                log.warning("preemption check failed", job_id=str(paused.job_id), error=str(exc))
                break
            if got is None:
                break
            ran += 1
            metrics.PREEMPTIONS.inc()
            metrics.DISPATCHED.labels("preempting").inc()
            if got.waited_s is not None:
                metrics.DISPATCH_WAIT.observe(max(0.0, got.waited_s))
            log.info(
                "chunk paused: a job owed a worker runs its chunk first",
                job_id=str(paused.job_id), chunk_index=paused.chunk_index, tenant_id=got.tenant_id,
                preempting_job_id=str(got.spec.job_id), preempting_chunk_index=got.spec.chunk_index,
            )  # fmt: skip
            try:
                await self._run(got.spec, self._plan(got.spec, got.epoch, got.lost_attempts), in_pause=True)
            except HandedBack:
                break
            except Exception as exc:  # its try is settled (`_work`); the paused chunk is not to blame
                log.warning(
                    "chunk run in a pause ended with an error; resuming the paused chunk",
                    job_id=str(got.spec.job_id), chunk_index=got.spec.chunk_index,
                    error_type=type(exc).__qualname__, error=describe(exc),
                )  # fmt: skip
        if not ran:
            return 0.0
        seconds = time.perf_counter() - started
        metrics.PAUSE_SECONDS.observe(seconds)
        log.info(
            "chunk resumed",
            job_id=str(paused.job_id), chunk_index=paused.chunk_index, paused_s=round(seconds, 3), chunks_run=ran,
        )  # fmt: skip
        return seconds

    async def _delete_work(self, job_id: uuid.UUID) -> None:
        """The failed job's chunks already uploaded (by any worker) go; the muxer removes later ones."""
        await asyncio.to_thread(delete_prefix, self.storage, self.settings.work_bucket, f"{job_id}/")

    async def _claim(self, record: ChunkReady) -> Held | None:
        """Claim the fairest chunk to run now (`dispatch`); None when there is nothing for this worker.

        `record` is the `chunk.ready` that rang. The chunk claimed may be another chunk or another job's:
        every record stands for one chunk still to do, so whichever chunk it claims, some record remains
        for each of the others. The claim counts the chunk's earlier tries whose workers died, timed out
        or failed with an error nobody classified, and the poison-chunk rule turns that count into the
        plan for this try.

        When every chunk still to do is leased, this record may be the only one left for a chunk whose
        worker died (a record re-read after a rebalance usually is): committing it now could leave that
        chunk without a worker. So it waits, polling for new work meanwhile, until each of those leases
        is either renewed (its worker lives and holds its own record) or runs out (then it is claimed
        here) — at most about a third of a lease period for live workers.
        """
        watched: dict[tuple[uuid.UUID, int], datetime] | None = None
        give_up_at = time.monotonic() + 3 * self.settings.lease_seconds
        while True:
            async with transaction(self.sessions) as session:
                got = await dispatch.claim_next(
                    session,
                    record,
                    worker_id=self.settings.worker_id,
                    lease_s=self.settings.lease_seconds,
                    fair=self.settings.dispatch == "fair",
                )
            if isinstance(got, dispatch.Dispatched):
                self._observe_dispatch(record, got)
                return self._plan(got.spec, got.epoch, got.lost_attempts)
            watched = got.leases if watched is None else watched
            unproven = {chunk: until for chunk, until in watched.items() if got.leases.get(chunk) == until}
            if not unproven:
                metrics.DISPATCHED.labels("none").inc()
                return None
            if time.monotonic() > give_up_at:
                raise TransientError(
                    f"{len(unproven)} chunks are still leased by workers that neither renew nor release them"
                )
            wait = (min(unproven.values()) - utcnow()).total_seconds() + 0.5
            log.info(
                "every chunk to do is leased; waiting for a lease to be renewed or run out",
                job_id=str(record.job_id), chunk_index=record.chunk_index, leased=len(unproven),
                wait_s=round(wait, 1),
            )  # fmt: skip
            await asyncio.sleep(min(max(wait, 0.1), self.settings.cancel_poll_s))

    @staticmethod
    def _observe_dispatch(record: ChunkReady, got: dispatch.Dispatched) -> None:
        if got.spec.job_id != record.job_id:
            claimed = "other_job"
        elif got.spec.chunk_index != record.chunk_index:
            claimed = "other_chunk"
        else:
            claimed = "own"
        metrics.DISPATCHED.labels(claimed).inc()
        if got.waited_s is not None:
            metrics.DISPATCH_WAIT.observe(max(0.0, got.waited_s))
        if claimed != "own":
            log.info(
                "claimed the fairest chunk instead of the record's",
                job_id=str(got.spec.job_id), chunk_index=got.spec.chunk_index, tenant_id=got.tenant_id,
                record_job_id=str(record.job_id), record_chunk_index=record.chunk_index,
            )  # fmt: skip

    def _plan(self, spec: ChunkReady, epoch: int, lost_attempts: int) -> Held:
        plan = plan_attempt(lost_attempts, self.settings.chunk_max_attempts)
        if lost_attempts:
            metrics.LOST_ATTEMPTS.labels(plan.value).inc()
            log.warning(
                "chunk's earlier tries were lost (a worker died, timed out or failed unexpectedly)",
                job_id=str(spec.job_id),
                chunk_index=spec.chunk_index,
                epoch=epoch,
                lost_attempts=lost_attempts,
                max_attempts=self.settings.chunk_max_attempts,
                plan=plan.value,
            )
        return Held(epoch, plan, lost_attempts, spec)

    async def _give_up(self, spec: ChunkReady, held: Held) -> None:
        """The chunk is poison: mark it failed and fail its job (raises `ChunkPoisoned`)."""
        async with transaction(self.sessions) as session:
            await chunks.give_up(session, spec.job_id, spec.chunk_index, held.epoch)
        metrics.CHUNKS.labels("poison").inc()
        log.error(
            "poison chunk: every attempt killed its worker; failing the job",
            job_id=str(spec.job_id),
            chunk_index=spec.chunk_index,
            lost_attempts=held.lost_attempts,
        )
        raise poisoned(spec.chunk_index, held.lost_attempts, min_scale=self.settings.min_scale)

    async def _renew(self, spec: ChunkReady, epoch: int) -> bool:
        async with transaction(self.sessions) as session:
            return await chunks.renew(
                session, spec.job_id, spec.chunk_index, epoch, lease_s=self.settings.lease_seconds
            )

    async def _release(self, spec: ChunkReady, epoch: int) -> None:
        """Give the chunk back at once (this worker is stopping), so the next claim need not wait."""
        async with transaction(self.sessions) as session:
            await chunks.release(session, spec.job_id, spec.chunk_index, epoch)
        log.info("chunk handed back", job_id=str(spec.job_id), chunk_index=spec.chunk_index, epoch=epoch)

    async def _work(
        self, spec: ChunkReady, epoch: int, *, conservative: bool = False, in_pause: bool = False
    ) -> None:
        workdir = self.settings.scratch_dir / f"{spec.job_id}-{spec.chunk_index}-{epoch}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        lost = asyncio.Event()
        cancelled = threading.Event()
        keeper = asyncio.create_task(
            keep_lease(
                lambda: self._renew(spec, epoch),
                lease_s=self.settings.lease_seconds,
                lost=lost,
                what="chunk lease",
                lost_when_run_out=False,  # the result is fenced by its epoch when it is recorded
                job_id=str(spec.job_id),
                chunk_index=spec.chunk_index,
                epoch=epoch,
            )
        )
        watcher = asyncio.create_task(self._watch_cancel(spec, cancelled))
        started_at = datetime.now(UTC)
        preemption = self._preemption(spec, in_pause=in_pause)
        try:
            output = workdir / "chunk.mkv"
            try:
                engine, choose, plan = await asyncio.to_thread(
                    self._prepare, spec, conservative=conservative, in_pause=in_pause
                )
                # told to stop while getting ready: hand back before starting
                drain = Drain(
                    self.stopping,
                    budget_s=self.settings.shutdown_grace_s * 0.7,
                    cancelled=cancelled.is_set,
                )
                drain.check(0, 1)
                started = time.perf_counter()
                if conservative:
                    log.warning(
                        "trying the chunk once with the most conservative settings",
                        job_id=str(spec.job_id), chunk_index=spec.chunk_index, epoch=epoch,
                        min_scale=self.settings.min_scale, batch_size=1,
                    )  # fmt: skip
                outcome = await asyncio.to_thread(
                    self._interpolate,
                    spec,
                    engine,
                    output,
                    drain,
                    choose,
                    plan=plan,
                    conservative=conservative,
                    preemption=preemption,
                )
                if await self._job_cancelled(spec.job_id):  # after the last batch: upload nothing
                    raise WorkCancelled("the job was cancelled; the chunk is abandoned")
            except (HandedBack, asyncio.CancelledError):
                # handing back, or cut short at the end of the grace period: free the chunk either way
                await asyncio.shield(self._release(spec, epoch))
                metrics.CHUNKS.labels("handed_back").inc()
                raise
            except MediaError as exc:
                if exc.code in SOURCE_READ_CODES:  # broken data, or the source went away mid-read?
                    await asyncio.to_thread(self._check_source, spec)
                raise
            except WorkCancelled:
                await self._release(spec, epoch)  # nobody will claim it; the lease shows it idle
                metrics.CHUNKS.labels("cancelled").inc()
                log.info(
                    "job cancelled; chunk abandoned", job_id=str(spec.job_id), chunk_index=spec.chunk_index
                )
                await self._delete_work(spec.job_id)
                return
            # the chunk's own time: pauses for chunks owed a worker are theirs
            seconds = time.perf_counter() - started - (preemption.paused_s if preemption else 0.0)
            if lost.is_set() or not await self._renew(spec, epoch):
                metrics.CHUNKS.labels("fenced").inc()
                raise LeaseLost(
                    f"lease of chunk {spec.chunk_index} (epoch {epoch}) was taken over; result discarded"
                )
            key = result_key(spec.job_id, spec.chunk_index, epoch)
            size = output.stat().st_size
            await asyncio.to_thread(
                self.storage.fput_object,
                self.settings.work_bucket,
                key,
                str(output),
                content_type="video/x-matroska",
            )
            await self.publish(
                Topic.CHUNK_INTERPOLATED,
                self._result(spec, epoch, key, size, engine, outcome, seconds, started_at),
            )
            await self._delivered(spec, epoch)
            self._observe(spec, epoch, outcome, seconds, size)
        except Exception as exc:
            if isinstance(exc, HandedBack) or permanent_failure(exc, "gpu_interp") is not None:
                pass  # handed back above, or the job fails
            elif is_transient(exc):
                # the outside world failed this try: give the chunk back (not a lost attempt)
                await self._release_quietly(spec, epoch)
            else:
                await self._abandon_quietly(spec, epoch, exc)
            raise
        finally:
            for task in (keeper, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            shutil.rmtree(workdir, ignore_errors=True)

    def _preemption(self, spec: ChunkReady, *, in_pause: bool) -> Preemption | None:
        """The chunk's batch-boundary preemption hook; None where it is off or the chunk runs in a pause."""
        if in_pause or not self.settings.preempt or self.settings.dispatch != "fair":
            return None
        return Preemption(
            lambda: self._run_waiting(spec), asyncio.get_running_loop(), every_s=self.settings.preempt_check_s
        )

    async def _delivered(self, spec: ChunkReady, epoch: int) -> None:
        """Let go of the chunk whose result is published, so no claim takes it again (`chunks.delivered`).

        Retried through a short database outage: until it is marked, the chunk looks like one whose
        worker died once its lease runs out, and a record spent on it would leave another chunk without.
        """
        for attempt in range(8):
            try:
                async with transaction(self.sessions) as session:
                    await chunks.delivered(
                        session, spec.job_id, spec.chunk_index, epoch, lease_s=self.settings.lease_seconds
                    )
                return
            except Exception as error:  # the database is restarting: try again shortly
                log.warning(
                    "delivered chunk not let go yet",
                    job_id=str(spec.job_id),
                    attempt=attempt,
                    error=str(error),
                )
                await asyncio.sleep(min(0.25 * 2**attempt, 5.0))

    async def _abandon_quietly(self, spec: ChunkReady, epoch: int, exc: Exception) -> None:
        """An error nobody classified ended the try: give the chunk back with the try counted as lost."""
        metrics.CHUNKS.labels("failed_try").inc()
        log.error(
            "chunk try failed with an unexpected error; it counts toward the poison-chunk rule",
            job_id=str(spec.job_id),
            chunk_index=spec.chunk_index,
            epoch=epoch,
            error_type=type(exc).__qualname__,
            error=describe(exc),
            exc_info=exc,
        )
        try:
            async with transaction(self.sessions) as session:
                await chunks.abandon(session, spec.job_id, spec.chunk_index, epoch)
        except Exception as error:  # the database is down too: the lease runs out, the try counts anyway
            log.warning("failed chunk not given back", job_id=str(spec.job_id), error=str(error))

    async def _release_quietly(self, spec: ChunkReady, epoch: int) -> None:
        try:
            await self._release(spec, epoch)
        except Exception as error:  # the database is down too: the lease runs out instead
            log.warning("chunk not handed back", job_id=str(spec.job_id), error=str(error))

    def _check_source(self, spec: ChunkReady) -> None:
        assert spec.source is not None
        source = spec.source
        check_source(self.storage, source.bucket, source.key, version_id=source.version_id, etag=source.etag)

    async def _job_cancelled(self, job_id: uuid.UUID) -> bool:
        async with transaction(self.sessions) as session:
            return await jobs.is_cancelled(session, job_id)

    async def _watch_cancel(self, spec: ChunkReady, cancelled: threading.Event) -> None:
        """Set `cancelled` once the chunk's job is cancelled; the work stops at its next batch."""
        while True:
            await asyncio.sleep(self.settings.cancel_poll_s)
            try:
                if await self._job_cancelled(spec.job_id):
                    cancelled.set()
                    return
            except Exception as exc:  # a database hiccup: ask again at the next poll
                log.warning("cancel check failed", job_id=str(spec.job_id), error=str(exc))

    def _prepare(
        self, spec: ChunkReady, *, conservative: bool = False, in_pause: bool = False
    ) -> tuple[InterpolationEngine, ChooseModel | None, MemoryPlan]:
        """The chunk's engine(s) and its memory plan, before anything is decoded (`memory_plan`).

        The plan starts from the engine's scale for this frame size and the configured pairs per call
        (the lightest settings for the poison rule's conservative try) and takes the heaviest that fit
        the worker's budget with what the worker already holds (its engines loaded), in tiles when no
        whole-frame settings fit (rife). A chunk that fits at no settings fails its job at once with E_CHUNK_TOO_LARGE_FOR_MEMORY; one to run in a pause
        of another (`in_pause`), whose memory is held meanwhile, is handed back instead.
        """
        assert spec.encoding is not None
        # the engines are built (and kept) first: what they hold is part of the baseline
        engine, _ = self._engine_for(spec, conservative=conservative)
        scale = engine.memory_scale(spec.height, spec.width)
        batch = self.settings.batch_size
        if conservative:
            lightest = lightest_step(scale, min_scale=self.settings.min_scale)
            scale, batch = lightest.scale, lightest.batch_size
        model, choice_window = planned_model(
            (spec.model or AUTO) if spec.engine == "rife" else None, spec.timesteps, spec.frame_count
        )
        shape = ChunkShape(
            width=spec.width,
            height=spec.height,
            engine=spec.engine,
            model=model,
            encoder=spec.encoding.encoder,
            preset=spec.encoding.preset,
            quality=spec.quality,
            choice_window=choice_window,
            frames_out=len(spec.timesteps),
            device=str(getattr(engine, "device", "cpu")),
        )
        release_memory()  # what the last chunk left for the collector is not the baseline
        plan = memory_plan.plan_for(
            shape,
            budget_bytes=self.memory_budget,
            baseline_bytes=current_rss_bytes(),
            scale=scale,
            batch_size=batch,
            min_scale=self.settings.min_scale,
        )
        fields = {
            "job_id": str(spec.job_id),
            "chunk_index": spec.chunk_index,
            "width": spec.width,
            "height": spec.height,
            "engine": spec.engine,
            "model": model,
            "scale": plan.scale,
            "batch_size": plan.batch_size,
            "tile": plan.tile,
            "memory_estimate_bytes": plan.estimate_bytes,
            "memory_baseline_bytes": plan.baseline_bytes,
            "memory_budget_bytes": plan.budget_bytes,
        }
        if not plan.fits and in_pause:
            raise HandedBack("no room beside the paused chunk's memory; the chunk waits for a free worker")
        if not plan.fits:
            metrics.MEMORY_PLANS.labels("too_large").inc()
            log.error("chunk cannot fit this worker's memory at any settings; failing the job", **fields)
            raise memory_plan.too_large(shape, plan)
        metrics.MEMORY_PLANS.labels(
            "tiled" if plan.tile else "lighter" if plan.lighter else "as_configured"
        ).inc()
        if plan.lighter:
            log.warning(
                "chunk planned lighter to fit the worker's memory",
                configured_scale=engine.memory_scale(spec.height, spec.width),
                configured_batch_size=self.settings.batch_size,
                **fields,
            )
        else:
            log.info("chunk memory planned", **fields)
        engine, choose = self._engine_for(spec, conservative=conservative, batch_size=plan.batch_size)
        return engine, choose, plan

    def _warm_up_before_claim(self, record: ChunkReady) -> None:
        """Warm both `auto` candidates up for the record's quality mode, once per process and mode."""
        if record.engine != "rife" or (record.model or AUTO) != AUTO or record.quality in self._warm:
            return
        try:
            warm_up({name: self.engines.get("rife", record.quality, name) for name in MODELS})
        except Exception as exc:  # the claimed chunk's own preparation tries again, and fails its job
            log.warning("models not warmed up before the claim", quality=record.quality, error=repr(exc))
            return
        self._warm.add(record.quality)

    def _engine_for(
        self, spec: ChunkReady, *, conservative: bool = False, batch_size: int | None = None
    ) -> tuple[InterpolationEngine, ChooseModel | None]:
        """The chunk's engine; for `rife` with `model=auto`, both models and the hook that picks one.

        The pick runs `batch_size` pairs per call (the chunk's memory plan; None: the configured
        number), one with `conservative`.

        An unknown model (a plan from a newer or broken producer) fails the job with E_PARAM_INVALID.
        """
        model = check_choice(spec.model or AUTO)
        if spec.engine != "rife" or model != AUTO:
            return self.engines.get(spec.engine, spec.quality, model), None
        auto = AutoModel({name: self.engines.get("rife", spec.quality, name) for name in MODELS})
        if spec.quality not in self._warm:
            # before the chunk's clock starts, like loading the weights: once per process and mode
            warm_up(auto.engines)
            self._warm.add(spec.quality)
        s = self.settings

        def choose(
            frame: FrameSource, count: int, pair_times: Mapping[int, Sequence[Fraction]], *, window: int
        ) -> ModelChoice:
            return auto.choose(
                frame,
                count,
                pair_times,
                budget=s.model_choice_budget,
                batch_size=1 if conservative else batch_size or s.batch_size,
                window=window,
            )

        return auto, choose

    def _interpolate(
        self,
        spec: ChunkReady,
        engine: InterpolationEngine,
        output: Path,
        drain: Drain,
        choose: ChooseModel | None = None,
        *,
        plan: MemoryPlan | None = None,
        conservative: bool = False,
        preemption: Preemption | None = None,
    ) -> ChunkOutcome:
        """Decode → interpolate → encode, in this worker thread (retried lighter when memory runs out).

        Starts at `plan`'s settings; `conservative`: only at the lightest (the poison-chunk rule's last
        try). The measured peak is this process's high-water mark from here on (reset now) plus the
        encoder's; unknown for a chunk that was paused (`preemption`): a chunk run in its pause reset it.
        """
        assert spec.source is not None
        assert spec.encoding is not None
        source: SourceRange = spec.source
        crash_point(self.settings, "gpu_interp.interpolate", f"{source.key}#{spec.chunk_index}")
        encoding = spec.encoding
        rate = Fraction(spec.out_fps_num, spec.out_fps_den)
        location = source_url(
            self.storage,
            source.bucket,
            source.key,
            version_id=source.version_id,
            expires_s=self.settings.lease_seconds * 60,
        )

        def frames() -> Iterator[Any]:
            return source_frames(location, source, timeout_s=self.settings.source_timeout_s)

        encoders: list[ChunkEncoder] = []

        def encoder() -> ChunkEncoder:
            encoders.append(
                ChunkEncoder(
                    output,
                    encoding,
                    width=spec.width,
                    height=spec.height,
                    rate=rate,
                    timeout_s=self.settings.encode_timeout_s,
                )
            )
            return encoders[-1]

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

        def on_batch(done: int, total: int) -> None:
            drain.check(done, total)
            if preemption is not None:
                preemption.check(done, total)

        measured = reset_peak()
        outcome = interpolate_with_retries(
            engine,
            frames,
            encoder,
            spec.timesteps,
            height=spec.height,
            width=spec.width,
            batch_size=self.settings.batch_size,
            min_scale=self.settings.min_scale,
            on_retry=on_retry,
            expected_frames=spec.frame_count,
            quality_budget=self.settings.quality_budget,
            quality_samples=self.settings.quality_samples,
            on_batch=on_batch,
            choose=choose,
            conservative=conservative,
            planned=None if plan is None else MemoryStep(plan.scale, plan.batch_size, plan.tile),
        )
        peak = peak_rss_bytes() + max((e.peak_rss_bytes for e in encoders), default=0)
        return replace(
            outcome,
            memory_estimate_bytes=None if plan is None else plan.estimate_bytes,
            peak_rss_bytes=peak if measured and not (preemption and preemption.paused_s) else None,
        )

    def _result(
        self,
        spec: ChunkReady,
        epoch: int,
        key: str,
        size: int,
        engine: InterpolationEngine,
        outcome: ChunkOutcome,
        seconds: float,
        started_at: datetime,
    ) -> ChunkInterpolated:
        quality = outcome.quality
        chosen = self._model_of(spec, outcome)
        return ChunkInterpolated(
            job_id=spec.job_id,
            chunk_index=spec.chunk_index,
            object_key=key,
            frames_out=outcome.frames_out,
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
            # what checking the chunk cost: under `auto` the choice, whose winner's check is the self-check
            quality_seconds=outcome.check_seconds,
            batch_size=outcome.batch_size,
            oom_retries=outcome.oom_retries,
            encoded_bytes=size,
            started_at=started_at,
            model=chosen.model if chosen else None,
            model_scores=chosen.scores or None if chosen else None,
        )

    @staticmethod
    def _model_of(spec: ChunkReady, outcome: ChunkOutcome) -> ModelChoice | None:
        """The RIFE model that did the chunk and how it was picked (None: the flow engine has none)."""
        if spec.engine != "rife":
            return None
        return outcome.model_choice or ModelChoice(check_choice(spec.model or AUTO), "job")

    def _check_budget(self, spec: ChunkReady, outcome: ChunkOutcome) -> float:
        """The share of the chunk its checks may cost: auto's choice budget when it chose by a check
        (the self-check included), else the self-check's own."""
        choice = outcome.model_choice
        if choice is not None and choice.chosen_by == "check":
            return self.settings.model_choice_budget
        return self.settings.quality_budget

    def _observe(
        self, spec: ChunkReady, epoch: int, outcome: ChunkOutcome, seconds: float, size: int
    ) -> None:
        quality = outcome.quality
        metrics.CHUNKS.labels("done").inc()
        chosen = self._model_of(spec, outcome)
        if chosen is not None:
            metrics.MODEL_CHOICES.labels(chosen.model, chosen.chosen_by).inc()
            if len(chosen.scores) > 1:
                ranked = sorted(chosen.scores.values(), reverse=True)
                metrics.MODEL_CHOICE_MARGIN.observe(ranked[0] - ranked[1])
        metrics.CHUNK_SECONDS.labels(spec.engine).observe(seconds)
        memory: dict[str, object] = {}
        if outcome.memory_estimate_bytes is not None:
            metrics.MEMORY_ESTIMATE.labels(spec.engine).observe(outcome.memory_estimate_bytes)
            metrics.LAST_MEMORY_ESTIMATE.set(outcome.memory_estimate_bytes)
            memory["memory_estimate_bytes"] = outcome.memory_estimate_bytes
            memory["memory_budget_bytes"] = self.memory_budget
        if outcome.peak_rss_bytes is not None:
            metrics.PEAK_RSS.labels(spec.engine).observe(outcome.peak_rss_bytes)
            metrics.LAST_PEAK_RSS.set(outcome.peak_rss_bytes)
            memory["peak_rss_bytes"] = outcome.peak_rss_bytes
            if outcome.peak_rss_bytes > self.memory_budget:
                log.warning(
                    "chunk's measured peak memory went over the worker's budget; the estimate fell short",
                    job_id=str(spec.job_id), chunk_index=spec.chunk_index, **memory,
                )  # fmt: skip
        metrics.FRAMES.labels(spec.engine).inc(outcome.frames_out)
        check: dict[str, object] = {}
        if quality is not None:
            # the self-check's cost against the chunk's own work (decode, interpolation, encode)
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
        if outcome.check_seconds > 0:
            # choice and self-check together (the chosen model's check counted once) vs their budget
            share = outcome.check_seconds / max(1e-9, seconds)
            metrics.CHECK_SHARE.labels(spec.engine).observe(share)
            check["check_seconds"] = round(outcome.check_seconds, 4)
            check["check_share"] = round(share, 4)
            check["check_budget"] = self._check_budget(spec, outcome)
        log.info(
            "chunk interpolated",
            job_id=str(spec.job_id),
            chunk_index=spec.chunk_index,
            epoch=epoch,
            frames_out=outcome.frames_out,
            encoded_bytes=size,
            seconds=round(seconds, 3),
            scale=outcome.scale,
            batch_size=outcome.batch_size,
            tile=outcome.tile,
            oom_retries=outcome.oom_retries,
            **memory,
            **check,
        )
