"""Claiming a chunk: fair dispatch, the wait on leases of workers that may be dead, the poison-chunk plan.

A claim also decides how the chunk is tried (`poison`): a chunk whose earlier workers died or ran out
their lease is retried, then tried once at the lightest memory settings, then fails its job with
`E_CHUNK_POISON`, so one chunk that kills its worker cannot crash-loop the whole fleet.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common import chunks, dispatch
from infiniteflow_common.db import transaction, utcnow
from infiniteflow_common.errors import TransientError
from infiniteflow_common.events import ChunkReady
from infiniteflow_common.observability import get_logger
from services.gpu_interp import metrics
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.poison import AttemptPlan, plan_attempt, poisoned

log = get_logger()


@dataclass(frozen=True)
class Held:
    """A chunk this worker claimed: its lease epoch, and how it is to be tried (the poison-chunk rule).

    `chunk` is its announcement: the chunk fair dispatch chose, not necessarily the record's.
    """

    epoch: int
    plan: AttemptPlan
    lost_attempts: int
    chunk: ChunkReady | None = field(default=None, compare=False)


class Claims:
    """Which chunk this worker runs now, and how it is to be tried."""

    def __init__(self, *, settings: WorkerSettings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions

    async def claim(self, record: ChunkReady) -> Held | None:
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
                _observe_dispatch(record, got)
                return self.plan(got.chunk, got.epoch, got.lost_attempts)
            watched = got.leases if watched is None else watched
            unproven = {key: until for key, until in watched.items() if got.leases.get(key) == until}
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

    def plan(self, chunk: ChunkReady, epoch: int, lost_attempts: int) -> Held:
        """The claimed chunk held, with its try planned from its lost tries (`poison.plan_attempt`)."""
        plan = plan_attempt(lost_attempts, self.settings.chunk_max_attempts)
        if lost_attempts:
            metrics.LOST_ATTEMPTS.labels(plan.value).inc()
            log.warning(
                "chunk's earlier tries were lost (a worker died, timed out or failed unexpectedly)",
                job_id=str(chunk.job_id),
                chunk_index=chunk.chunk_index,
                epoch=epoch,
                lost_attempts=lost_attempts,
                max_attempts=self.settings.chunk_max_attempts,
                plan=plan.value,
            )
        return Held(epoch, plan, lost_attempts, chunk)

    async def give_up(self, chunk: ChunkReady, held: Held) -> None:
        """The chunk is poison: mark it failed and fail its job (raises `ChunkPoisoned`)."""
        async with transaction(self.sessions) as session:
            await chunks.give_up(session, chunk.job_id, chunk.chunk_index, held.epoch)
        metrics.CHUNKS.labels("poison").inc()
        log.error(
            "poison chunk: every attempt killed its worker; failing the job",
            job_id=str(chunk.job_id),
            chunk_index=chunk.chunk_index,
            lost_attempts=held.lost_attempts,
        )
        raise poisoned(chunk.chunk_index, held.lost_attempts, min_scale=self.settings.min_scale)


def _observe_dispatch(record: ChunkReady, got: dispatch.Dispatched) -> None:
    """Count which chunk the record's claim took (its own, another of its job's, another job's)."""
    if got.chunk.job_id != record.job_id:
        claimed = "other_job"
    elif got.chunk.chunk_index != record.chunk_index:
        claimed = "other_chunk"
    else:
        claimed = "own"
    metrics.DISPATCHED.labels(claimed).inc()
    if got.waited_s is not None:
        metrics.DISPATCH_WAIT.observe(max(0.0, got.waited_s))
    if claimed != "own":
        log.info(
            "claimed the fairest chunk instead of the record's",
            job_id=str(got.chunk.job_id), chunk_index=got.chunk.chunk_index, tenant_id=got.tenant_id,
            record_job_id=str(record.job_id), record_chunk_index=record.chunk_index,
        )  # fmt: skip
