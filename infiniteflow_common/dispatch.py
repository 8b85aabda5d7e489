"""Fair dispatch: which chunk a free worker takes next, across every running job and tenant.

Each `chunk.ready` record is a *doorbell*, not an assignment: a worker that reads one claims the chunk
that is fairest to run now, whichever job it belongs to, and works on that. Kafka stays the transport
(one record per planned chunk, so there are always as many records as chunks to do), PostgreSQL holds
the state the choice needs. Jobs planned after a big one no longer wait behind its whole queue on their
partitions: the next worker to free up serves them.

The order, for the chunks that can be claimed now (pending, or leased by a worker whose lease ran out;
never a chunk whose result its worker has published, `chunks.delivered`: its record is spent, and a
record spent on it would leave another chunk without one):

1. a chunk this worker holds already (its own retry continues its try, as `chunks.claim` says; a
   chunk whose result the worker published is no longer held: `chunks.delivered`);
2. the tenant with the least of the fleet for its weight: its chunks being worked on ÷ `tenants.weight`
   (anonymous jobs are one tenant of weight 1) — a tenant with ten jobs gets no more than one with one;
3. within the tenant, the job with the highest `priority` (−50…50);
4. then the job with the fewest chunks running now, and of those the one served longest ago (a job
   never served first) — concurrent jobs take turns a chunk at a time, even on a single worker;
5. ties: the job of the record that rang, then the oldest job; within a job, the record's own chunk,
   then chunk order.

Claims are serialised by a transaction-level advisory lock, so two workers never both see the same
tenant as least served; a claim is one short transaction. The lease, epoch, try-counting and
poison-chunk rules are `chunks.claim`'s, unchanged: this module only decides which chunk to claim.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from infiniteflow_common import chunks
from infiniteflow_common.db import Chunk, Job, utcnow
from infiniteflow_common.domain import FINAL_STATUSES
from infiniteflow_common.events import ChunkReady

# pg_advisory_xact_lock key of the dispatch critical section ("IFDISPAT" as a 64-bit integer).
DISPATCH_LOCK = 0x4946_4449_5350_4154

_FINAL = tuple(sorted(FINAL_STATUSES))

# Jobs still running, their chunks running now, and their tenant's load for its weight. (Statuses are
# ChunkStatus values.)
_LOAD = """
with served as (
    select c.job_id,
           count(*) filter (
               where c.status = 'claimed' and c.lease_expires_at >= :now and c.worker is not null
           ) as running,
           max(c.started_at) as last_served
    from chunks c join jobs j on j.id = c.job_id
    where j.status not in :final
    group by c.job_id
),
runnable as (
    select j.id, coalesce(j.tenant_id, '') as tenant, j.priority, j.created_at,
           coalesce(l.running, 0) as running, l.last_served
    from jobs j left join served l on l.job_id = j.id
    where j.status not in :final
),
tenant_load as (
    select r.tenant, sum(r.running)::float / coalesce(max(t.weight), 1.0) as share,
           sum(r.running) as running, coalesce(max(t.weight), 1.0) as weight
    from runnable r left join tenants t on t.id = r.tenant
    group by r.tenant
)
"""

_NEXT = text(
    _LOAD
    + """
select c.job_id, c.chunk_index
from chunks c
join runnable r on r.id = c.job_id
join tenant_load tl on tl.tenant = r.tenant
where (
        c.status = 'pending'
        or (c.status = 'claimed' and c.worker is not null and (c.lease_expires_at < :now or c.worker = :worker))
      )
  and (jsonb_typeof(c.spec) = 'object' or (c.job_id = :job_id and c.chunk_index = :chunk_index))
  and (:fair or (c.job_id = :job_id and c.chunk_index = :chunk_index))
order by (c.status = 'claimed' and c.worker = :worker) desc,
         tl.share asc,
         r.priority desc,
         r.running asc,
         r.last_served asc nulls first,
         (c.job_id = :job_id) desc,
         r.created_at asc,
         (c.job_id = :job_id and c.chunk_index = :chunk_index) desc,
         c.chunk_index asc
limit 1
for update of c skip locked
"""
).bindparams(bindparam("final", expanding=True))

_LEASED = text(
    """
select c.job_id, c.chunk_index, c.lease_expires_at
from chunks c join jobs j on j.id = c.job_id
where c.status = 'claimed' and c.worker is not null and j.status not in :final
  and (:fair or (c.job_id = :job_id and c.chunk_index = :chunk_index))
"""
).bindparams(bindparam("final", expanding=True))


# A waiting chunk that would be claimed before the held one's job, were that chunk waiting too: its
# tenant's share is smaller than the held job's tenant's without the held chunk, or, at an equal share,
# its job comes first by priority, then by fewer chunks running (the held chunk not counted). Strictly
# before, so two jobs never take turns pausing each other.
_PREEMPTING = text(
    _LOAD  # noqa: S608 - constant SQL joined at import; every value is a bound parameter
    + """,
held as (
    select r.tenant, r.priority, r.running - 1 as running, (tl.running - 1)::float / tl.weight as share
    from runnable r join tenant_load tl on tl.tenant = r.tenant
    where r.id = :job_id
)
select c.job_id, c.chunk_index
from chunks c
join runnable r on r.id = c.job_id
join tenant_load tl on tl.tenant = r.tenant
cross join held h
where (c.status = 'pending' or (c.status = 'claimed' and c.worker is not null and c.lease_expires_at < :now))
  and jsonb_typeof(c.spec) = 'object'
  and c.job_id <> :job_id
  and (
        (case when r.tenant = h.tenant then h.share else tl.share end) < h.share
        or ((case when r.tenant = h.tenant then h.share else tl.share end) = h.share
            and (r.priority > h.priority or (r.priority = h.priority and r.running < h.running)))
      )
order by tl.share asc,
         r.priority desc,
         r.running asc,
         r.last_served asc nulls first,
         r.created_at asc,
         c.chunk_index asc
limit 1
for update of c skip locked
"""
).bindparams(bindparam("final", expanding=True))


@dataclass(frozen=True)
class Dispatched:
    """A chunk this worker now holds: its announcement, its lease epoch and its earlier lost tries."""

    chunk: ChunkReady
    epoch: int
    lost_attempts: int
    tenant_id: str | None
    waited_s: float | None
    """Seconds from the chunk's planning to this, its first claim (None for later claims)."""


@dataclass(frozen=True)
class NothingClaimable:
    """Every chunk still to do is leased: by live workers, or by dead ones whose leases run on.

    `leases` maps (job_id, chunk_index) to the lease's expiry, so the caller can tell a renewed lease
    (its worker lives) from one that runs out (its worker died, and the chunk needs a worker).
    """

    leases: dict[tuple[uuid.UUID, int], datetime]


async def claim_next(
    session: AsyncSession, record: ChunkReady, *, worker_id: str, lease_s: float, fair: bool = True
) -> Dispatched | NothingClaimable:
    """Claim the fairest chunk to run now (see the module doc); `record` is the doorbell that rang.

    `fair=False` claims only the record's own chunk: first come, first served, as before this module.
    """
    await session.execute(text("select pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK})
    now = utcnow()
    params: dict[str, Any] = {
        "now": now,
        "final": _FINAL,
        "worker": worker_id,
        "job_id": record.job_id,
        "chunk_index": record.chunk_index,
        "fair": fair,
    }
    row = (await session.execute(_NEXT, params)).one_or_none()
    if row is None:
        leased = await session.execute(_LEASED, params)
        return NothingClaimable({(r.job_id, r.chunk_index): r.lease_expires_at for r in leased})
    job_id, index = row
    return await _claim(session, job_id, index, record, worker_id=worker_id, lease_s=lease_s, now=now)


async def claim_preempting(
    session: AsyncSession, held: ChunkReady, *, worker_id: str, lease_s: float
) -> Dispatched | None:
    """Claim a waiting chunk that is owed a worker before `held`'s job is (see `_PREEMPTING`), if any.

    The worker holding `held` runs it in a pause of `held` (preemption at a batch boundary): a job
    that has no worker now does not wait for the rest of another job's running chunk. None: nothing
    waiting is owed more than the held chunk's job.
    """
    await session.execute(text("select pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK})
    now = utcnow()
    params = {"now": now, "final": _FINAL, "job_id": held.job_id}
    row = (await session.execute(_PREEMPTING, params)).one_or_none()
    if row is None:
        return None
    job_id, index = row
    return await _claim(session, job_id, index, None, worker_id=worker_id, lease_s=lease_s, now=now)


async def _claim(
    session: AsyncSession,
    job_id: uuid.UUID,
    index: int,
    record: ChunkReady | None,
    *,
    worker_id: str,
    lease_s: float,
    now: datetime,
) -> Dispatched:
    """Claim the chosen chunk (locked by the caller's query) and read what working on it needs."""
    claim = await chunks.claim(session, job_id, index, worker_id=worker_id, lease_s=lease_s)
    assert claim.epoch is not None, "the chunk was claimable and is locked by this transaction"
    details = (
        await session.execute(
            select(col(Chunk.spec), col(Chunk.created_at), col(Chunk.lease_epoch), col(Job.tenant_id))
            .join(Job, col(Job.id) == col(Chunk.job_id))
            .where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == index)
        )
    ).one()
    # only the record's own chunk may lack its announcement (rows recorded before chunks kept theirs)
    chunk = details.spec or record
    assert chunk is not None, "a chunk claimed without a record has its announcement (the query asks)"
    first = claim.epoch == 1
    return Dispatched(
        chunk=chunk,
        epoch=claim.epoch,
        lost_attempts=claim.lost_attempts,
        tenant_id=details.tenant_id,
        waited_s=(now - details.created_at).total_seconds() if first else None,
    )
