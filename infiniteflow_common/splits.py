"""Splits as leased background work: a repository of split requests, their leases and tries.

The splitter turns each `video.uploaded` into a request on the job's row and commits the record at
once (a long source never holds a Kafka consumer past `max.poll.interval.ms`). Planners take the
requests, highest priority and oldest first, under a lease they renew while the pass runs; every write
of the split is fenced by that lease (`holds`), so two planners never split one job at the same time.
A planner that dies leaves a lease that runs out and another takes the job over from the start
(the plan is deterministic: the chunks already announced are the same); a job whose split started
`max_tries` times is failed instead of tried for ever.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from infiniteflow_common.db import Job, utcnow
from infiniteflow_common.domain import FINAL_STATUSES
from infiniteflow_common.events import VideoUploaded

FINAL = tuple(FINAL_STATUSES)


@dataclass(frozen=True)
class Claimed:
    """A split this planner now holds: the job, the `video.uploaded` it answers, and which try it is."""

    job_id: uuid.UUID
    request: VideoUploaded
    tries: int


async def request(session: AsyncSession, job_id: uuid.UUID, event: VideoUploaded) -> bool:
    """Record that `job_id` waits to be split (a replayed record changes nothing); False if it cannot be."""
    result = await session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status).not_in(FINAL), col(Job.split_at).is_(None))
        .where(col(Job.split_request).is_(None))
        .values(split_request=event)
    )
    return bool(getattr(result, "rowcount", 0))


async def claim_next(
    session: AsyncSession, *, owner: str, lease_s: float, max_tries: int
) -> tuple[Claimed | None, list[uuid.UUID]]:
    """Take the next split to run: the highest priority, then the oldest request nobody holds.

    Returns the split taken (None when there is none) and the jobs whose splits already started
    `max_tries` times without finishing: their planners died each time; the caller fails them.
    """
    now = utcnow()
    rows = (
        await session.execute(
            select(Job)
            .where(col(Job.split_request).is_not(None), col(Job.split_at).is_(None))
            .where(col(Job.status).not_in(FINAL))
            .where(or_(col(Job.split_lease_expires_at).is_(None), col(Job.split_lease_expires_at) < now))
            .order_by(col(Job.priority).desc(), col(Job.created_at))
            .limit(8)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    exhausted: list[uuid.UUID] = []
    for job in rows:
        if job.split_tries >= max_tries:
            exhausted.append(job.id)
            continue
        if job.split_request is None:  # the query's filter; for the type checker
            continue
        job.split_owner = owner
        job.split_lease_expires_at = now + timedelta(seconds=lease_s)
        job.split_tries += 1
        await session.flush()
        return Claimed(job.id, job.split_request, job.split_tries), exhausted
    return None, exhausted


async def renew(session: AsyncSession, job_id: uuid.UUID, *, owner: str, lease_s: float) -> bool:
    """Extend this planner's lease; False when it lost it (ran out, taken over) or the job ended."""
    result = await session.execute(
        update(Job)
        .where(col(Job.id) == job_id, *_holds(owner))
        .values(split_lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    return bool(getattr(result, "rowcount", 0))


async def holds(session: AsyncSession, job_id: uuid.UUID, *, owner: str) -> bool:
    """Whether this planner still holds the job's split: locks the row until the transaction ends,
    so what the caller writes with it cannot race a takeover."""
    found = (
        await session.execute(
            select(col(Job.id)).where(col(Job.id) == job_id, *_holds(owner)).with_for_update()
        )
    ).scalar_one_or_none()
    return found is not None


async def hand_back(session: AsyncSession, job_id: uuid.UUID, *, owner: str) -> None:
    """Give the split back on a clean stop: another planner starts it at once, and the try is not counted."""
    await session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.split_owner) == owner, col(Job.split_at).is_(None))
        .values(split_owner=None, split_lease_expires_at=None, split_tries=col(Job.split_tries) - 1)
    )


async def unannounced(session: AsyncSession, *, owner: str, lease_s: float = 30.0) -> list[uuid.UUID]:
    """Take over finished splits whose planner stopped before announcing them (its lease ran out)."""
    now = utcnow()
    rows = (
        await session.execute(
            select(Job)
            .where(col(Job.split_at).is_not(None), col(Job.split_owner).is_not(None))
            .where(col(Job.split_lease_expires_at) < now, col(Job.status).not_in(FINAL))
            .limit(8)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    taken = []
    for job in rows:
        job.split_owner = owner
        job.split_lease_expires_at = now + timedelta(seconds=lease_s)
        taken.append(job.id)
    await session.flush()
    return taken


async def announced(session: AsyncSession, job_id: uuid.UUID, *, owner: str) -> None:
    """The finished split's chunks and plan are published: nobody needs to hold it any more."""
    await session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.split_owner) == owner, col(Job.split_at).is_not(None))
        .values(split_owner=None, split_lease_expires_at=None)
    )


async def waiting(session: AsyncSession) -> int:
    """How many requested splits are not finished (held or not)."""
    rows = (
        await session.execute(
            select(col(Job.id))
            .where(col(Job.split_request).is_not(None), col(Job.split_at).is_(None))
            .where(col(Job.status).not_in(FINAL))
        )
    ).all()
    return len(rows)


def _holds(owner: str) -> tuple[Any, ...]:
    now: datetime = utcnow()
    return (
        col(Job.split_owner) == owner,
        col(Job.split_lease_expires_at) >= now,
        col(Job.split_at).is_(None),
        col(Job.status).not_in(FINAL),
    )
