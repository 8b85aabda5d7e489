"""The pause loop of a chunk in hand: claim and run each chunk owed a worker first (`preemption`).

`preemption.Preemption` decides when to ask, between two batches; this runs what the asking finds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common import dispatch
from infiniteflow_common.classify import describe
from infiniteflow_common.db import transaction
from infiniteflow_common.errors import HandedBack
from infiniteflow_common.events import ChunkReady
from infiniteflow_common.observability import get_logger
from services.gpu_interp import metrics
from services.gpu_interp.claims import Held
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.preemption import Preemption

log = get_logger()

RunInPause = Callable[[ChunkReady, Held], Awaitable[None]]
"""Runs a claimed chunk to its end in a pause of another (its try settled as any chunk's is)."""


class Pauses:
    """Pauses a chunk in hand for the chunks owed a worker before its job, and runs them meanwhile."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        sessions: async_sessionmaker[AsyncSession],
        plan: Callable[[ChunkReady, int, int], Held],
        run: RunInPause,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.plan = plan
        self.run = run
        self.stopping = stopping

    def preemption(self, chunk: ChunkReady, *, in_pause: bool) -> Preemption | None:
        """The chunk's batch-boundary preemption hook; None where it is off or the chunk runs in a pause."""
        if in_pause or not self.settings.preempt or self.settings.dispatch != "fair":
            return None
        return Preemption(
            lambda: self.run_waiting(chunk), asyncio.get_running_loop(), every_s=self.settings.preempt_check_s
        )

    async def run_waiting(self, paused: ChunkReady) -> float:
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
                preempting_job_id=str(got.chunk.job_id), preempting_chunk_index=got.chunk.chunk_index,
            )  # fmt: skip
            try:
                await self.run(got.chunk, self.plan(got.chunk, got.epoch, got.lost_attempts))
            except HandedBack:
                break
            except Exception as exc:  # its try is settled (`_work`); the paused chunk is not to blame
                log.warning(
                    "chunk run in a pause ended with an error; resuming the paused chunk",
                    job_id=str(got.chunk.job_id), chunk_index=got.chunk.chunk_index,
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
