"""One try at a claimed chunk: prepare (engines, memory plan), interpolate and encode, upload, report.

The work itself is one bounded stream (`chunk_work`): the chunk's frames are read from the pinned
source with ranged reads, interpolated in batches and encoded in the job's final codec as they come.
The lease is renewed meanwhile (`ChunkLease`); the result is written under an epoch-specific key and
published only while the lease is still this worker's, so a late result from an evicted worker
neither overwrites nor counts.

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
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from infiniteflow_common import jobs
from infiniteflow_common.chaos import crash_point
from infiniteflow_common.classify import is_transient
from infiniteflow_common.db import transaction
from infiniteflow_common.deps import Deps
from infiniteflow_common.errors import HandedBack, TransientError, WorkCancelled
from infiniteflow_common.events import ChunkReady, SourceRange
from infiniteflow_common.failures import permanent_failure
from infiniteflow_common.leases import keep_lease
from infiniteflow_common.media import MediaError
from infiniteflow_common.observability import get_logger
from infiniteflow_common.storage import check_source, delete_prefix, source_url
from infiniteflow_common.timing import Slot
from infiniteflow_common.topics import Topic
from services.gpu_interp import memory_plan, metrics, report
from services.gpu_interp.chunk_lease import ChunkLease
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
from services.gpu_interp.pauses import Pauses
from services.gpu_interp.preemption import Preemption
from services.gpu_interp.process_memory import current_rss_bytes, peak_rss_bytes, reset_peak

log = get_logger()

SOURCE_READ_CODES = frozenset({"E_MEDIA_CORRUPT", "E_MEDIA_UNREADABLE", "E_CHUNK_FRAME_COUNT"})
"""Decode failures of a source ingest probed as sound: the object may have been deleted or replaced."""


def slots_of(chunk: ChunkReady) -> list[Slot]:
    """The chunk's output slots, their timesteps exact again (the wire carries floats)."""
    return [Slot.from_wire(wire) for wire in chunk.timesteps]


class LeaseLost(TransientError):  # noqa: N818 - a state, not an error class name
    """Another worker took the chunk over; this worker's result must be discarded."""

    code = "E_LEASE_LOST"


class ChunkWork:
    """Tries claimed chunks on this worker: its engines, its memory budget and its scratch space.

    `engine_for` and `interpolate` are the try's two heavy steps; tests replace them on the instance.
    """

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        deps: Deps,
        engines: EngineCache,
        lease: ChunkLease,
        pauses: Pauses,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.sessions = deps.sessions
        self.storage = deps.storage
        self.publish = deps.publish
        self.engines = engines
        self.lease = lease
        self.pauses = pauses
        self.stopping = stopping
        self.memory_budget = default_memory_budget(settings)
        metrics.MEMORY_BUDGET.set(self.memory_budget)
        self._warm: set[str] = set()  # quality modes whose auto candidates have met the check's shape

    async def work(
        self, chunk: ChunkReady, epoch: int, *, conservative: bool = False, in_pause: bool = False
    ) -> None:
        """Try the claimed chunk under lease `epoch`; an error raised is its try's end, settled here.

        `conservative`: the poison-chunk rule's last try, at the lightest settings. `in_pause`: the
        chunk runs in a pause of another chunk in hand (`pauses`).
        """
        workdir = self.settings.scratch_dir / f"{chunk.job_id}-{chunk.chunk_index}-{epoch}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        lost = asyncio.Event()
        cancelled = threading.Event()
        keeper = asyncio.create_task(self._keep_lease(chunk, epoch, lost))
        watcher = asyncio.create_task(self._watch_cancel(chunk, cancelled))
        started_at = datetime.now(UTC)
        preemption = self.pauses.preemption(chunk, in_pause=in_pause)
        try:
            output = workdir / "chunk.mkv"
            try:
                engine, choose, plan = await asyncio.to_thread(
                    self._prepare, chunk, conservative=conservative, in_pause=in_pause
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
                        job_id=str(chunk.job_id), chunk_index=chunk.chunk_index, epoch=epoch,
                        min_scale=self.settings.min_scale, batch_size=1,
                    )  # fmt: skip
                outcome = await asyncio.to_thread(
                    self.interpolate,
                    chunk,
                    engine,
                    output,
                    drain,
                    choose,
                    plan=plan,
                    conservative=conservative,
                    preemption=preemption,
                )
                if await self._job_cancelled(chunk.job_id):  # after the last batch: upload nothing
                    raise WorkCancelled("the job was cancelled; the chunk is abandoned")
            except (HandedBack, asyncio.CancelledError):
                # handing back, or cut short at the end of the grace period: free the chunk either way
                await asyncio.shield(self.lease.release(chunk, epoch))
                metrics.CHUNKS.labels("handed_back").inc()
                raise
            except MediaError as exc:
                if exc.code in SOURCE_READ_CODES:  # broken data, or the source went away mid-read?
                    await asyncio.to_thread(self._check_source, chunk)
                raise
            except WorkCancelled:
                await self.lease.release(chunk, epoch)  # nobody will claim it; the lease shows it idle
                metrics.CHUNKS.labels("cancelled").inc()
                log.info(
                    "job cancelled; chunk abandoned", job_id=str(chunk.job_id), chunk_index=chunk.chunk_index
                )
                await self.delete_work(chunk.job_id)
                return
            # the chunk's own time: pauses for chunks owed a worker are theirs
            seconds = time.perf_counter() - started - (preemption.paused_s if preemption else 0.0)
            if lost.is_set() or not await self.lease.renew(chunk, epoch):
                metrics.CHUNKS.labels("fenced").inc()
                raise LeaseLost(
                    f"lease of chunk {chunk.chunk_index} (epoch {epoch}) was taken over; result discarded"
                )
            size = output.stat().st_size
            await self._deliver(chunk, epoch, output, size, engine, outcome, seconds, started_at)
        except Exception as exc:
            await self._settle_failed(chunk, epoch, exc)
            raise
        finally:
            for task in (keeper, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            shutil.rmtree(workdir, ignore_errors=True)

    def _keep_lease(self, chunk: ChunkReady, epoch: int, lost: asyncio.Event) -> Coroutine[Any, Any, None]:
        """Renew the chunk's lease while it is worked on; `lost` is set once another worker took it."""
        return keep_lease(
            lambda: self.lease.renew(chunk, epoch),
            lease_s=self.settings.lease_seconds,
            lost=lost,
            what="chunk lease",
            lost_when_run_out=False,  # the result is fenced by its epoch when it is recorded
            job_id=str(chunk.job_id),
            chunk_index=chunk.chunk_index,
            epoch=epoch,
        )

    async def _settle_failed(self, chunk: ChunkReady, epoch: int, exc: Exception) -> None:
        """Let the chunk go as the error that ended its try says (see the module's docstring)."""
        if isinstance(exc, HandedBack) or permanent_failure(exc, "gpu_interp") is not None:
            return  # handed back already, or the job fails
        if is_transient(exc):
            # the outside world failed this try: give the chunk back (not a lost attempt)
            await self.lease.release_quietly(chunk, epoch)
        else:
            await self.lease.abandon_quietly(chunk, epoch, exc)

    async def _deliver(
        self,
        chunk: ChunkReady,
        epoch: int,
        output: Path,
        size: int,
        engine: InterpolationEngine,
        outcome: ChunkOutcome,
        seconds: float,
        started_at: datetime,
    ) -> None:
        """Upload the encoded chunk under its epoch's key, publish its result, and let the chunk go."""
        key = report.result_key(chunk.job_id, chunk.chunk_index, epoch)
        await asyncio.to_thread(
            self.storage.fput_object,
            self.settings.work_bucket,
            key,
            str(output),
            content_type="video/x-matroska",
        )
        await self.publish(
            Topic.CHUNK_INTERPOLATED,
            report.result_event(self.settings, chunk, epoch, key, size, engine, outcome, seconds, started_at),
        )
        await self.lease.delivered(chunk, epoch)
        report.observe(self.settings, self.memory_budget, chunk, epoch, outcome, seconds, size)

    async def delete_work(self, job_id: uuid.UUID) -> None:
        """The failed job's chunks already uploaded (by any worker) go; the muxer removes later ones."""
        await asyncio.to_thread(delete_prefix, self.storage, self.settings.work_bucket, f"{job_id}/")

    def _check_source(self, chunk: ChunkReady) -> None:
        assert chunk.source is not None
        source = chunk.source
        check_source(self.storage, source.bucket, source.key, version_id=source.version_id, etag=source.etag)

    async def _job_cancelled(self, job_id: uuid.UUID) -> bool:
        async with transaction(self.sessions) as session:
            return await jobs.is_cancelled(session, job_id)

    async def _watch_cancel(self, chunk: ChunkReady, cancelled: threading.Event) -> None:
        """Set `cancelled` once the chunk's job is cancelled; the work stops at its next batch."""
        while True:
            await asyncio.sleep(self.settings.cancel_poll_s)
            try:
                if await self._job_cancelled(chunk.job_id):
                    cancelled.set()
                    return
            except Exception as exc:  # a database hiccup: ask again at the next poll
                log.warning("cancel check failed", job_id=str(chunk.job_id), error=str(exc))

    def _prepare(
        self, chunk: ChunkReady, *, conservative: bool = False, in_pause: bool = False
    ) -> tuple[InterpolationEngine, ChooseModel | None, MemoryPlan]:
        """The chunk's engine(s) and its memory plan, before anything is decoded (`memory_plan`).

        The plan starts from the engine's scale for this frame size and the configured pairs per call
        (the lightest settings for the poison rule's conservative try) and takes the heaviest that fit
        the worker's budget with what the worker already holds (its engines loaded), in tiles when no
        whole-frame settings fit (rife). A chunk that fits at no settings fails its job at once with E_CHUNK_TOO_LARGE_FOR_MEMORY; one to run in a pause
        of another (`in_pause`), whose memory is held meanwhile, is handed back instead.
        """
        assert chunk.encoding is not None
        # the engines are built (and kept) first: what they hold is part of the baseline
        engine, _ = self.engine_for(chunk, conservative=conservative)
        scale = engine.memory_scale(chunk.height, chunk.width)
        batch = self.settings.batch_size
        if conservative:
            lightest = lightest_step(scale, min_scale=self.settings.min_scale)
            scale, batch = lightest.scale, lightest.batch_size
        model, choice_window = planned_model(
            (chunk.model or AUTO) if chunk.engine == "rife" else None, slots_of(chunk), chunk.frame_count
        )
        shape = ChunkShape(
            width=chunk.width,
            height=chunk.height,
            engine=chunk.engine,
            model=model,
            encoder=chunk.encoding.encoder,
            preset=chunk.encoding.preset,
            quality=chunk.quality,
            choice_window=choice_window,
            frames_out=len(chunk.timesteps),
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
            "job_id": str(chunk.job_id),
            "chunk_index": chunk.chunk_index,
            "width": chunk.width,
            "height": chunk.height,
            "engine": chunk.engine,
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
                configured_scale=engine.memory_scale(chunk.height, chunk.width),
                configured_batch_size=self.settings.batch_size,
                **fields,
            )
        else:
            log.info("chunk memory planned", **fields)
        engine, choose = self.engine_for(chunk, conservative=conservative, batch_size=plan.batch_size)
        return engine, choose, plan

    def warm_up_before_claim(self, record: ChunkReady) -> None:
        """Warm both `auto` candidates up for the record's quality mode, once per process and mode."""
        if record.engine != "rife" or (record.model or AUTO) != AUTO or record.quality in self._warm:
            return
        try:
            warm_up({name: self.engines.get("rife", record.quality, name) for name in MODELS})
        except Exception as exc:  # the claimed chunk's own preparation tries again, and fails its job
            log.warning("models not warmed up before the claim", quality=record.quality, error=repr(exc))
            return
        self._warm.add(record.quality)

    def engine_for(
        self, chunk: ChunkReady, *, conservative: bool = False, batch_size: int | None = None
    ) -> tuple[InterpolationEngine, ChooseModel | None]:
        """The chunk's engine; for `rife` with `model=auto`, both models and the hook that picks one.

        The pick runs `batch_size` pairs per call (the chunk's memory plan; None: the configured
        number), one with `conservative`.

        An unknown model (a plan from a newer or broken producer) fails the job with E_PARAM_INVALID.
        """
        model = check_choice(chunk.model or AUTO)
        if chunk.engine != "rife" or model != AUTO:
            return self.engines.get(chunk.engine, chunk.quality, model), None
        auto = AutoModel({name: self.engines.get("rife", chunk.quality, name) for name in MODELS})
        if chunk.quality not in self._warm:
            # before the chunk's clock starts, like loading the weights: once per process and mode
            warm_up(auto.engines)
            self._warm.add(chunk.quality)
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

    def interpolate(
        self,
        chunk: ChunkReady,
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
        assert chunk.source is not None
        assert chunk.encoding is not None
        source: SourceRange = chunk.source
        crash_point(self.settings, "gpu_interp.interpolate", f"{source.key}#{chunk.chunk_index}")
        encoding = chunk.encoding
        rate = Fraction(chunk.out_fps_num, chunk.out_fps_den)
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
                    width=chunk.width,
                    height=chunk.height,
                    rate=rate,
                    timeout_s=self.settings.encode_timeout_s,
                )
            )
            return encoders[-1]

        def on_retry(failed: MemoryStep, following: MemoryStep, error: BaseException) -> None:
            metrics.OOM_RETRIES.labels(chunk.engine).inc()
            log.warning(
                "chunk ran out of memory; retrying lighter",
                job_id=str(chunk.job_id),
                chunk_index=chunk.chunk_index,
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
            slots_of(chunk),
            height=chunk.height,
            width=chunk.width,
            batch_size=self.settings.batch_size,
            min_scale=self.settings.min_scale,
            on_retry=on_retry,
            expected_frames=chunk.frame_count,
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
