"""Job state transitions shared by the services, each one idempotent under replays.

Status only moves forward (pending → splitting → interpolating → muxing → completed |
completed_with_warnings | failed), and a user may cancel a job that is not final yet; a final
status (`cancelled` included) never changes; progress never decreases. A replayed event therefore cannot
move a job backwards, and a cancelled job can never complete or fail: the muxer's `advance(…, COMPLETED)`
and any stage's `fail()` find no row to update and report it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from infiniteflow_common.db import Job, utcnow
from infiniteflow_common.domain import FINAL_STATUSES, JobStatus
from infiniteflow_common.events import JobParams, MediaProbe
from infiniteflow_common.output import OutputOptions

ORDER = {
    JobStatus.PENDING: 0,
    JobStatus.SPLITTING: 1,
    JobStatus.INTERPOLATING: 2,
    JobStatus.MUXING: 3,
    JobStatus.COMPLETED: 4,
    JobStatus.COMPLETED_WITH_WARNINGS: 4,
    JobStatus.FAILED: 4,
    JobStatus.CANCELLED: 4,
}
FINAL = tuple(sorted(FINAL_STATUSES))


def may_transition(current: str, target: JobStatus) -> bool:
    """Whether a job in `current` may move to `target` (pure; `advance` and `cancel` enforce it in SQL).

    Never out of a final status; `cancelled` from any other status; otherwise only forward or to the
    same stage (a replay).
    """
    if current in FINAL_STATUSES:
        return False
    if target is JobStatus.CANCELLED:
        return True
    return ORDER.get(JobStatus(current), 0) <= ORDER[target]


async def create_job(session: AsyncSession, **fields: Any) -> tuple[Job, bool]:
    """Insert a job unless its source object (bucket, key, etag) already has one.

    Returns the job and whether this call created it; a replayed upload event gets the existing job.
    """
    job_id = fields.pop("id", None) or uuid.uuid4()
    statement = (
        insert(Job)
        .values(id=job_id, **fields)
        .on_conflict_do_nothing(constraint="uq_jobs_source_object")
        .returning(col(Job.id))
    )
    created = (await session.execute(statement)).scalar_one_or_none()
    job = (
        await session.execute(
            select(Job).where(
                col(Job.source_bucket) == fields["source_bucket"],
                col(Job.source_key) == fields["source_key"],
                col(Job.source_etag) == fields["source_etag"],
            )
        )
    ).scalar_one()
    return job, created is not None


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    """The job, or None when unknown."""
    return await session.get(Job, job_id)


async def read_job(session: AsyncSession, job_id: uuid.UUID, *, lock: bool = False) -> Job:
    """The job as the database has it now (a fresh `select`, not the session's cached object);
    `lock` holds its row (`for update`) until the transaction ends. Raises when there is no such job."""
    statement = select(Job).where(col(Job.id) == job_id)
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one()


async def record_start(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    params: JobParams,
    probe: MediaProbe,
    output_options: OutputOptions,
    progress: int,
) -> None:
    """Record what ingest decided for a job: its params, probe and resolved output options; progress
    only rises."""
    await session.execute(
        update(Job)
        .where(col(Job.id) == job_id)
        .values(
            params=params,
            priority=params.priority,
            probe=probe,
            output_options=output_options,
            progress=func.greatest(Job.progress, progress),
            updated_at=utcnow(),
        )
    )


async def list_page(
    session: AsyncSession, *, tenant_id: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Job]:
    """Up to `limit` jobs of `tenant_id` (None: the jobs without a tenant), newest first, starting after
    the (created_at, id) position `after`."""
    statement = select(Job)
    if tenant_id is None:
        statement = statement.where(col(Job.tenant_id).is_(None))
    else:
        statement = statement.where(col(Job.tenant_id) == tenant_id)
    if after is not None:
        created_at, last_id = after
        statement = statement.where(
            or_(
                col(Job.created_at) < created_at,
                and_(col(Job.created_at) == created_at, col(Job.id) < last_id),
            )
        )
    statement = statement.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit)
    return list((await session.execute(statement)).scalars().all())


async def count_by_status(session: AsyncSession) -> list[tuple[str, int]]:
    """`select status, count(*) from jobs group by status`."""
    rows = (await session.execute(select(col(Job.status), func.count()).group_by(col(Job.status)))).all()
    return [(str(status), int(count)) for status, count in rows]


async def source_jobs(
    session: AsyncSession, bucket: str, keys: Sequence[str]
) -> list[tuple[str, str, str, bool, datetime]]:
    """(key, etag, status, has_probe, updated_at) of every job whose source object is one of `keys`."""
    rows = await session.execute(
        select(
            col(Job.source_key),
            col(Job.source_etag),
            col(Job.status),
            col(Job.probe),
            col(Job.updated_at),
        ).where(col(Job.source_bucket) == bucket, col(Job.source_key).in_(keys))
    )
    return [
        (key, etag, status, probe is not None, updated_at)
        for key, etag, status, probe, updated_at in rows.all()
    ]


async def advance(
    session: AsyncSession,
    job_id: uuid.UUID,
    status: JobStatus,
    *,
    progress: int | None = None,
    assembly_owner: str | None = None,
    **fields: Any,
) -> bool:
    """Move a job forward to `status` (never backwards, never out of a final status).

    `progress` only ever grows. Extra `fields` are written with the transition. With `assembly_owner`
    the move is fenced: it happens only while that muxer holds a live assembly claim
    (`claim_assembly`), so a muxer that lost its claim to another can never complete the job.
    Returns whether the job was updated.
    """
    if status is JobStatus.CANCELLED:
        raise ValueError("cancel a job with cancel(), which records when and from which status")
    rank = ORDER[status]
    current_rank = case(
        *[(col(Job.status) == s.value, r) for s, r in ORDER.items()],
        else_=0,
    )
    values: dict[str, Any] = {"status": status.value, "updated_at": utcnow(), **fields}
    if progress is not None:
        values["progress"] = func.greatest(Job.progress, progress)
    statement = (
        update(Job)
        .where(col(Job.id) == job_id)
        .where(col(Job.status).not_in(FINAL))
        .where(current_rank <= rank)
        .values(**values)
    )
    if assembly_owner is not None:
        statement = statement.where(*_holds_assembly(assembly_owner))
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


def _holds_assembly(owner: str) -> tuple[Any, ...]:
    """The fence of an assembly step: `owner` holds the job's assembly claim and it has not run out."""
    return (col(Job.mux_owner) == owner, col(Job.mux_lease_expires_at) > utcnow())


async def set_progress(session: AsyncSession, job_id: uuid.UUID, progress: int) -> None:
    """Raise a job's progress to `progress` (0–100); lower values are ignored."""
    await session.execute(
        update(Job)
        .where(col(Job.id) == job_id)
        .where(col(Job.status).not_in(FINAL))
        .values(progress=func.greatest(Job.progress, min(100, max(0, progress))), updated_at=utcnow())
    )


async def fail(session: AsyncSession, job_id: uuid.UUID, code: str, message: str) -> bool:
    """Mark a job failed with a stable code and a message a person can act on (once; final)."""
    return await advance(session, job_id, JobStatus.FAILED, error_code=code, error_message=message)


@dataclass(frozen=True)
class CancelResult:
    """What `cancel` found and did."""

    job: Job
    """The job after the call (status `cancelled` unless it was already final otherwise)."""
    previous_status: str
    """The status before this call."""
    cancelled_now: bool
    """True when this call moved the job to `cancelled`; False for a repeat or a job already final."""


async def cancel(
    session: AsyncSession, job_id: uuid.UUID, *, now: datetime | None = None
) -> CancelResult | None:
    """Cancel a job unless it is final; None when there is no such job.

    Idempotent: cancelling a cancelled job changes nothing (`cancelled_now` is False, the status stays
    `cancelled`). The row is locked for the check, so a muxer completing the job at the same moment
    either finishes first (then this call sees a final job) or finds the job cancelled and stops.
    """
    job = (
        await session.execute(select(Job).where(col(Job.id) == job_id).with_for_update())
    ).scalar_one_or_none()
    if job is None:
        return None
    previous = job.status
    if not may_transition(previous, JobStatus.CANCELLED):
        return CancelResult(job=job, previous_status=previous, cancelled_now=False)
    moment = now or utcnow()
    job.status = JobStatus.CANCELLED.value
    job.cancelled_at = moment
    job.updated_at = moment
    await session.flush()
    return CancelResult(job=job, previous_status=previous, cancelled_now=True)


async def is_cancelled(session: AsyncSession, job_id: uuid.UUID) -> bool:
    """Whether the job was cancelled (workers ask before claiming a chunk and while working on one).

    An unknown job answers False: it is not this function's business to decide about missing rows.
    """
    status = (
        await session.execute(select(col(Job.status)).where(col(Job.id) == job_id))
    ).scalar_one_or_none()
    return status == JobStatus.CANCELLED.value


async def cancelled_among(session: AsyncSession, job_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The cancelled ones of `job_ids`, in one query (a worker checking every job it holds a chunk of)."""
    if not job_ids:
        return set()
    rows = await session.execute(
        select(col(Job.id))
        .where(col(Job.id).in_(job_ids))
        .where(col(Job.status) == JobStatus.CANCELLED.value)
    )
    return set(rows.scalars().all())


async def claim_assembly(
    session: AsyncSession, job_id: uuid.UUID, *, owner: str, lease_s: float
) -> tuple[bool, datetime | None]:
    """Take the job's assembly (→ muxing) unless another muxer holds a live claim on it.

    Returns (claimed, until when the other claim holds). A claim of a crashed muxer expires after
    `lease_s`; its job is then taken over by whoever reads the job's records next.
    """
    now = utcnow()
    result = await session.execute(
        update(Job)
        .where(col(Job.id) == job_id)
        .where(col(Job.status).not_in(FINAL))
        .where(
            or_(
                col(Job.mux_owner).is_(None),
                col(Job.mux_owner) == owner,
                col(Job.mux_lease_expires_at) < now,
            )
        )
        .values(
            status=JobStatus.MUXING.value,
            mux_owner=owner,
            mux_lease_expires_at=now + timedelta(seconds=lease_s),
            mux_started_at=func.coalesce(col(Job.mux_started_at), now),
            updated_at=now,
        )
        .returning(col(Job.id))
    )
    if result.scalar_one_or_none() is not None:
        return True, None
    job = await session.get(Job, job_id)
    return False, job.mux_lease_expires_at if job else None


async def renew_assembly(session: AsyncSession, job_id: uuid.UUID, *, owner: str, lease_s: float) -> bool:
    """Extend this muxer's claim on the job's assembly; False when it lost it.

    A claim that ran out is lost even when nobody took it yet: another muxer may be taking it at
    this moment, and the work done since is no longer covered by a claim.
    """
    result = await session.execute(
        update(Job)
        .where(col(Job.id) == job_id, *_holds_assembly(owner))
        .where(col(Job.status).not_in(FINAL))
        .values(mux_lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    return bool(getattr(result, "rowcount", 0))


async def reopen_for_chunks(session: AsyncSession, job_id: uuid.UUID, *, owner: str, done: int) -> bool:
    """Give up this muxer's assembly claim and send the job back to `interpolating`.

    The one step back a job may take: some of its chunks' outputs were lost before assembly and are
    being made again. Only the claim's holder may do it, and never for a final job.
    """
    result = await session.execute(
        update(Job)
        .where(col(Job.id) == job_id, *_holds_assembly(owner))
        .where(col(Job.status).not_in(FINAL))
        .values(
            status=JobStatus.INTERPOLATING.value,
            mux_owner=None,
            mux_lease_expires_at=None,
            chunks_done=done,
            updated_at=utcnow(),
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def record_chunks_done(session: AsyncSession, job_id: uuid.UUID, done: int) -> None:
    """Raise the job's count of chunks with a result (never lowers it)."""
    await session.execute(
        update(Job)
        .where(col(Job.id) == job_id)
        .values(chunks_done=func.greatest(col(Job.chunks_done), done), updated_at=utcnow())
    )
