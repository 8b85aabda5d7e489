"""`chunk.ready` → the chunk's part of the output, encoded, in the work bucket, and `chunk.interpolated`.

A worker claims the chunk in PostgreSQL with a lease (epoch + expiry) and renews it while it works.
Another worker can take the chunk over only once the lease has expired; it then gets a higher epoch.
Results carry their epoch and are written under an epoch-specific key, so a late result from an
evicted worker neither overwrites nor counts: the muxer accepts only the current epoch.

The handler composes four parts, one concern each: `claims` (which chunk, when to wait for leases,
the poison-chunk plan), `work` (one try: prepare, interpolate, encode, upload, report), `pauses`
(preemption: chunks owed a worker run in a pause of the chunk in hand) and `chunk_lease` (renew,
hand back, abandon, let go).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from infiniteflow_common.deps import Deps, PipelineHandler
from infiniteflow_common.errors import HandedBack, InvalidMessage, JobScopedError
from infiniteflow_common.events import ChunkReady, decode_event
from infiniteflow_common.failures import job_fails_on
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.observability import get_logger
from services.gpu_interp import metrics
from services.gpu_interp.chunk_lease import ChunkLease
from services.gpu_interp.chunk_work import ChooseModel
from services.gpu_interp.claims import Claims, Held
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.engines.base import InterpolationEngine
from services.gpu_interp.pauses import Pauses
from services.gpu_interp.poison import AttemptPlan
from services.gpu_interp.work import ChunkWork

__all__ = ["ChunkHandler", "Held"]

log = get_logger()


def _refuse_outdated(chunk: ChunkReady) -> None:
    """A plan from before workers encoded their own output (ChunkReady v1) cannot be worked on."""
    if chunk.source is None or chunk.encoding is None or chunk.out_fps_num == 0:
        raise InvalidMessage(
            f"chunk {chunk.chunk_index} of job {chunk.job_id} was planned before workers encoded their "
            "own output (ChunkReady v1); upload the video again",
            code="E_CHUNK_OUTDATED",
        )


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
        self.stopping = stopping
        self.claims = Claims(settings=settings, sessions=deps.sessions)
        self.lease = ChunkLease(settings=settings, sessions=deps.sessions)
        self.pauses = Pauses(
            settings=settings,
            sessions=deps.sessions,
            plan=self.claims.plan,
            run=self._run_in_pause,
            stopping=stopping,
        )
        self.work = ChunkWork(
            settings=settings,
            deps=deps,
            engines=engines,
            lease=self.lease,
            pauses=self.pauses,
            stopping=stopping,
        )
        # the parts' steps tests call or replace on the handler (`_engine_for`, `_interpolate` are the work's)
        self._claim = self.claims.claim
        self._release = self.lease.release
        self._renew = self.lease.renew

    async def __call__(self, delivery: Delivery) -> None:
        """Handle one `chunk.ready` record: claim the fairest chunk to run now, and do it."""
        record = decode_event(self.catalog, delivery.value, ChunkReady)
        _refuse_outdated(record)
        # Warm `auto`'s models up before claiming: a worker told to stop meanwhile holds no chunk yet,
        # and one that claims hands its chunk back within its grace period (the warm-up takes seconds).
        await asyncio.to_thread(self.work.warm_up_before_claim, record)
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
        chunk = held.chunk or record
        try:
            await self._run(chunk, held)
        except (InvalidMessage, HandedBack):
            raise  # the consumer acts on these by their type
        except Exception as exc:
            if chunk.job_id == record.job_id:
                raise
            raise JobScopedError(str(chunk.job_id), exc) from exc

    async def _run(self, chunk: ChunkReady, held: Held, *, in_pause: bool = False) -> None:
        """Work on a claimed chunk; a permanent failure fails its job (`job_fails_on`).

        `in_pause`: the chunk runs in a pause of another chunk in hand (`preemption`).
        """
        failing = job_fails_on(
            self.sessions,
            self.publish,
            job_id=chunk.job_id,
            stage="gpu_interp",
            chunk_index=chunk.chunk_index,
            cleanup=self.work.delete_work,
        )
        async with failing:
            _refuse_outdated(chunk)
            if held.plan is AttemptPlan.POISON:
                await self.claims.give_up(chunk, held)
            with metrics.BUSY.track_inprogress():
                await self._work(
                    chunk, held.epoch, conservative=held.plan is AttemptPlan.CONSERVATIVE, in_pause=in_pause
                )

    async def _run_in_pause(self, chunk: ChunkReady, held: Held) -> None:
        await self._run(chunk, held, in_pause=True)

    async def _work(
        self, chunk: ChunkReady, epoch: int, *, conservative: bool = False, in_pause: bool = False
    ) -> None:
        await self.work.work(chunk, epoch, conservative=conservative, in_pause=in_pause)

    @property
    def _engine_for(self) -> Callable[..., tuple[InterpolationEngine, ChooseModel | None]]:
        return self.work.engine_for

    @_engine_for.setter
    def _engine_for(self, replacement: Callable[..., tuple[InterpolationEngine, ChooseModel | None]]) -> None:
        self.work.engine_for = replacement  # type: ignore[method-assign]

    @property
    def _interpolate(self) -> Callable[..., object]:
        return self.work.interpolate

    @_interpolate.setter
    def _interpolate(self, replacement: Callable[..., object]) -> None:
        self.work.interpolate = replacement  # type: ignore[method-assign,assignment]
