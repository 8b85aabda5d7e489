"""The chunk lifecycle in PostgreSQL: planned → claimed (under a lease) → done, each step idempotent.

A chunk is keyed by (job_id, chunk_index). A claim bumps the chunk's lease epoch (a fencing token) and
sets a lease the worker renews while it works; another worker can take the chunk over only once that
lease has expired. A result counts only for the chunk's current epoch, so a late result from an
evicted worker is fenced off. The splitter, gpu_interp and muxer handlers go through this module and
contain no SQL of their own.

`attempts` counts the tries that did not hand the chunk back: a claim adds one, a hand-back
(`release`: the worker is stopping, hit a transient error, or the job was cancelled) takes its one
back, and a worker re-claiming the chunk it holds continues its own try. So whenever a chunk that is
not done is claimed, every earlier counted try ended without a result and without a hand-back: its
worker died (an OOM kill, a crash), ran out its lease, or gave the chunk up after an error nobody
classified (`abandon`: such an error may well repeat on every worker). `Claim.lost_attempts` is that
number, which the workers' poison-chunk rule (`services.gpu_interp.poison`) decides on.

A database outage is not a lost try: a worker cannot renew its lease nor hand the chunk back while
the database is down, and one whose retries ran out meanwhile restarts as a new worker. So a claim
that takes over a lease which ran out while the database server was restarting (the server started
after the lease's last renewal) takes the earlier try over instead of counting a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from infiniteflow_common.db import Chunk, utcnow
from infiniteflow_common.domain import ChunkStatus
from infiniteflow_common.events import ChunkInterpolated, ChunkReady
from infiniteflow_common.reports import CheckCosts

ResultOutcome = Literal["recorded", "replayed", "fenced"]


@dataclass(frozen=True)
class Claim:
    """What a claim attempt got: a new lease epoch, or the chunk is done, or it is leased until then.

    With an epoch, `lost_attempts` counts the chunk's earlier tries whose worker died or timed out.
    """

    epoch: int | None = None
    done: bool = False
    leased_until: datetime | None = None
    lost_attempts: int = 0


async def insert_planned(session: AsyncSession, job_id: uuid.UUID, specs: Sequence[ChunkReady]) -> None:
    """Record a job's planned chunks (a replayed plan changes nothing)."""
    for spec in specs:
        await session.execute(
            insert(Chunk)
            .values(
                job_id=job_id,
                chunk_index=spec.chunk_index,
                first_frame=spec.first_frame,
                frame_count=spec.frame_count,
                status=ChunkStatus.PENDING.value,
                spec=spec,
            )
            .on_conflict_do_nothing()
        )


async def pending_specs(session: AsyncSession, job_id: uuid.UUID) -> list[ChunkReady]:
    """The announcements of a job's chunks that are not done yet, in chunk order."""
    rows = (
        await session.execute(
            select(Chunk)
            .where(col(Chunk.job_id) == job_id, col(Chunk.status) != ChunkStatus.DONE.value)
            .order_by(col(Chunk.chunk_index))
        )
    ).scalars()
    return [row.spec for row in rows if row.spec is not None]


async def claim(
    session: AsyncSession, job_id: uuid.UUID, chunk_index: int, *, worker_id: str, lease_s: float
) -> Claim:
    """Take the chunk's lease when it is pending, its lease expired, or this worker holds it already.

    A new try counts one attempt; re-claiming the lease this worker holds (its own retry of the same
    record) continues that try. Worker ids are unique per process start, so a restarted process is a
    new worker and its predecessor's try counts as lost.
    """
    now = utcnow()
    own = (col(Chunk.status) == ChunkStatus.CLAIMED.value) & (col(Chunk.worker) == worker_id)
    # The lease's last renewal came before the database server (re)started: its worker could neither
    # renew nor hand back while the server was down, and may have restarted for that very reason.
    # A worker killed just before an unrelated restart is forgiven too: the rarer, harmless mistake.
    cut_by_outage = (col(Chunk.status) == ChunkStatus.CLAIMED.value) & (
        col(Chunk.lease_expires_at) - timedelta(seconds=lease_s) < func.pg_postmaster_start_time()
    )
    result = await session.execute(
        update(Chunk)
        .where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == chunk_index)
        .where(
            or_(
                col(Chunk.status) == ChunkStatus.PENDING.value,
                (col(Chunk.status) == ChunkStatus.CLAIMED.value) & (col(Chunk.lease_expires_at) < now),
                own,
            )
        )
        .values(
            status=ChunkStatus.CLAIMED.value,
            worker=worker_id,
            lease_epoch=col(Chunk.lease_epoch) + 1,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=col(Chunk.attempts) + case((own, 0), (cut_by_outage, 0), else_=1),
            started_at=now,
        )
        .returning(col(Chunk.lease_epoch), col(Chunk.attempts))
    )
    claimed = result.one_or_none()
    if claimed is not None:
        epoch, attempts = claimed
        return Claim(epoch=int(epoch), lost_attempts=max(0, int(attempts) - 1))
    row = await session.get(Chunk, (job_id, chunk_index))
    if row is None:
        raise LookupError(f"chunk {chunk_index} of job {job_id} is not recorded")
    if row.status == ChunkStatus.DONE.value:
        return Claim(done=True)
    return Claim(leased_until=row.lease_expires_at or now)


async def renew(
    session: AsyncSession, job_id: uuid.UUID, chunk_index: int, epoch: int, *, lease_s: float
) -> bool:
    """Extend the lease of `epoch`; False when the chunk was taken over (the epoch moved on)."""
    result = await session.execute(
        update(Chunk)
        .where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == chunk_index)
        .where(col(Chunk.lease_epoch) == epoch, col(Chunk.status) == ChunkStatus.CLAIMED.value)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    return bool(getattr(result, "rowcount", 0))


async def release(session: AsyncSession, job_id: uuid.UUID, chunk_index: int, epoch: int) -> None:
    """Hand the chunk back at once (the worker is stopping), so the next claim need not wait.

    The try is given back too: a hand-back is not a lost attempt.
    """
    await session.execute(
        update(Chunk)
        .where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == chunk_index)
        .where(col(Chunk.lease_epoch) == epoch, col(Chunk.status) == ChunkStatus.CLAIMED.value)
        .values(
            status=ChunkStatus.PENDING.value,
            worker=None,
            lease_expires_at=None,
            attempts=func.greatest(col(Chunk.attempts) - 1, 0),
        )
    )


async def delivered(
    session: AsyncSession, job_id: uuid.UUID, chunk_index: int, epoch: int, *, lease_s: float
) -> None:
    """The worker published its result for `epoch`: it holds the chunk no more, the muxer records it.

    The chunk keeps its epoch; fair dispatch never claims it again (its chunk.ready record is spent:
    a record spent on it would leave another chunk without one) while the muxer records the result,
    however late (a broker outage). Without this, the worker's next claim would find the chunk still
    leased to itself and take it once more.
    """
    await session.execute(
        update(Chunk)
        .where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == chunk_index)
        .where(col(Chunk.lease_epoch) == epoch, col(Chunk.status) == ChunkStatus.CLAIMED.value)
        .values(worker=None, lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )


async def abandon(session: AsyncSession, job_id: uuid.UUID, chunk_index: int, epoch: int) -> None:
    """Give the chunk back at once after an error nobody classified, the try still counted.

    The next claim need not wait out the lease, and it counts this try as lost: an unexpected error of
    the engine or a codec library is likely to repeat, so the poison-chunk rule must see it.
    """
    await session.execute(
        update(Chunk)
        .where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == chunk_index)
        .where(col(Chunk.lease_epoch) == epoch, col(Chunk.status) == ChunkStatus.CLAIMED.value)
        .values(status=ChunkStatus.PENDING.value, worker=None, lease_expires_at=None)
    )


async def give_up(session: AsyncSession, job_id: uuid.UUID, chunk_index: int, epoch: int) -> None:
    """Mark the chunk failed under `epoch` (its job fails with it): no worker holds or takes it again."""
    await session.execute(
        update(Chunk)
        .where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == chunk_index)
        .where(col(Chunk.lease_epoch) == epoch, col(Chunk.status) == ChunkStatus.CLAIMED.value)
        .values(status=ChunkStatus.FAILED.value, lease_expires_at=None, finished_at=utcnow())
    )


async def record_result(session: AsyncSession, event: ChunkInterpolated) -> ResultOutcome:
    """Record a worker's result once, only for the chunk's current lease epoch."""
    recorded = await session.execute(
        update(Chunk)
        .where(col(Chunk.job_id) == event.job_id, col(Chunk.chunk_index) == event.chunk_index)
        .where(col(Chunk.lease_epoch) == event.lease_epoch, col(Chunk.status) != ChunkStatus.DONE.value)
        .values(
            status=ChunkStatus.DONE.value,
            output_key=event.object_key,
            frames_out=event.frames_out,
            interp_seconds=event.interp_seconds,
            quality_psnr_db=event.quality_psnr_db,
            quality_ssim=event.quality_ssim,
            quality_samples=event.quality_samples,
            quality_seconds=event.quality_seconds,
            scale=event.scale,
            batch_size=event.batch_size,
            oom_retries=event.oom_retries,
            encoded_bytes=event.encoded_bytes,
            model=event.model,
            model_scores=event.model_scores,
            worker=event.worker_id,
            finished_at=event.finished_at,
        )
    )
    if getattr(recorded, "rowcount", 0):
        return "recorded"
    chunk = await session.get(Chunk, (event.job_id, event.chunk_index))
    return "replayed" if chunk and chunk.lease_epoch == event.lease_epoch else "fenced"


async def redo(session: AsyncSession, job_id: uuid.UUID, chunk_indices: Sequence[int]) -> list[ChunkReady]:
    """Plan done chunks again whose output was lost (e.g. expired from the work bucket before assembly).

    Each goes back to pending under a new lease epoch, so nothing recorded for the lost output counts
    again; its tries are not touched (no worker failed). Returns the announcements to publish again,
    with the next delivery attempt.
    """
    specs = []
    for index in chunk_indices:
        chunk = await session.get(Chunk, (job_id, index), with_for_update=True)
        if chunk is None or chunk.status != ChunkStatus.DONE.value or chunk.spec is None:
            continue
        spec = chunk.spec.model_copy(update={"attempt": chunk.spec.attempt + 1})
        chunk.status = ChunkStatus.PENDING.value
        chunk.lease_epoch += 1
        chunk.lease_expires_at = None
        chunk.worker = None
        chunk.output_key = None
        chunk.frames_out = None
        chunk.finished_at = None
        chunk.spec = spec
        specs.append(spec)
    await session.flush()
    return specs


async def done_count(session: AsyncSession, job_id: uuid.UUID) -> int:
    """How many of the job's chunks have a recorded result."""
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(Chunk)
                .where(col(Chunk.job_id) == job_id, col(Chunk.status) == ChunkStatus.DONE.value)
            )
        ).scalar_one()
    )


async def in_order(session: AsyncSession, job_id: uuid.UUID) -> list[Chunk]:
    """Every chunk of the job in chunk order (results and their scores for assembly and reports)."""
    return list(
        (
            await session.execute(
                select(Chunk).where(col(Chunk.job_id) == job_id).order_by(col(Chunk.chunk_index))
            )
        )
        .scalars()
        .all()
    )


async def check_costs(session: AsyncSession, job_id: uuid.UUID) -> CheckCosts:
    """What checking the job's finished chunks cost (`reports.check_view`).

    A chunk whose model `auto` chose by a check has scores; its `quality_seconds` is that whole
    choice (the winner's check is its self-check). Any other chunk's is its own self-check.
    """
    chosen = func.coalesce(func.jsonb_typeof(col(Chunk.model_scores)), "") == "object"
    seconds = func.coalesce(col(Chunk.quality_seconds), 0.0)
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(col(Chunk.interp_seconds)), 0.0),
                func.coalesce(func.sum(case((chosen, seconds), else_=0.0)), 0.0),
                func.coalesce(func.sum(case((chosen, 0.0), else_=seconds)), 0.0),
            ).where(col(Chunk.job_id) == job_id, col(Chunk.status) == ChunkStatus.DONE.value)
        )
    ).one()
    return CheckCosts(int(row[0]), float(row[1]), float(row[2]), float(row[3]))


async def work_window(session: AsyncSession, job_id: uuid.UUID) -> tuple[datetime | None, datetime | None]:
    """First chunk start and last chunk end of the job (the interpolate stage's wall time)."""
    row = (
        await session.execute(
            select(func.min(col(Chunk.started_at)), func.max(col(Chunk.finished_at))).where(
                col(Chunk.job_id) == job_id
            )
        )
    ).one()
    return row[0], row[1]
