"""The lease of a claimed chunk: renewed while it is worked on, and let go in one of three ways.

How a try ends decides which. A result published lets the chunk go for good (`delivered`). A
transient failure (the object store, the database, the broker) or a worker told to stop hands it
back with its try (`release`): the outside world is to blame. An error nobody classified gives it
back with its try counted (`abandon`), as if the worker had died, toward the poison-chunk rule.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common import chunks
from infiniteflow_common.classify import describe
from infiniteflow_common.db import transaction
from infiniteflow_common.events import ChunkReady
from infiniteflow_common.observability import get_logger
from services.gpu_interp import metrics
from services.gpu_interp.config import WorkerSettings

log = get_logger()


class ChunkLease:
    """Renews, hands back, abandons and lets go of this worker's lease on a chunk (`chunks`)."""

    def __init__(self, *, settings: WorkerSettings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions

    async def renew(self, chunk: ChunkReady, epoch: int) -> bool:
        """Extend the lease; False once another worker took the chunk over."""
        async with transaction(self.sessions) as session:
            return await chunks.renew(
                session, chunk.job_id, chunk.chunk_index, epoch, lease_s=self.settings.lease_seconds
            )

    async def release(self, chunk: ChunkReady, epoch: int) -> None:
        """Give the chunk back at once (this worker is stopping), so the next claim need not wait."""
        async with transaction(self.sessions) as session:
            await chunks.release(session, chunk.job_id, chunk.chunk_index, epoch)
        log.info("chunk handed back", job_id=str(chunk.job_id), chunk_index=chunk.chunk_index, epoch=epoch)

    async def release_quietly(self, chunk: ChunkReady, epoch: int) -> None:
        """`release`, where the database failing too only leaves the lease to run out."""
        try:
            await self.release(chunk, epoch)
        except Exception as error:  # the database is down too: the lease runs out instead
            log.warning("chunk not handed back", job_id=str(chunk.job_id), error=str(error))

    async def abandon_quietly(self, chunk: ChunkReady, epoch: int, exc: Exception) -> None:
        """An error nobody classified ended the try: give the chunk back with the try counted as lost."""
        metrics.CHUNKS.labels("failed_try").inc()
        log.error(
            "chunk try failed with an unexpected error; it counts toward the poison-chunk rule",
            job_id=str(chunk.job_id),
            chunk_index=chunk.chunk_index,
            epoch=epoch,
            error_type=type(exc).__qualname__,
            error=describe(exc),
            exc_info=exc,
        )
        try:
            async with transaction(self.sessions) as session:
                await chunks.abandon(session, chunk.job_id, chunk.chunk_index, epoch)
        except Exception as error:  # the database is down too: the lease runs out, the try counts anyway
            log.warning("failed chunk not given back", job_id=str(chunk.job_id), error=str(error))

    async def delivered(self, chunk: ChunkReady, epoch: int) -> None:
        """Let go of the chunk whose result is published, so no claim takes it again (`chunks.delivered`).

        Retried through a short database outage: until it is marked, the chunk looks like one whose
        worker died once its lease runs out, and a record spent on it would leave another chunk without.
        """
        for attempt in range(8):
            try:
                async with transaction(self.sessions) as session:
                    await chunks.delivered(
                        session, chunk.job_id, chunk.chunk_index, epoch, lease_s=self.settings.lease_seconds
                    )
                return
            except Exception as error:  # the database is restarting: try again shortly
                log.warning(
                    "delivered chunk not let go yet",
                    job_id=str(chunk.job_id),
                    attempt=attempt,
                    error=str(error),
                )
                await asyncio.sleep(min(0.25 * 2**attempt, 5.0))
