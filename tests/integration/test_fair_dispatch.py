"""Fair dispatch on the real PostgreSQL: which chunk the next free worker takes across jobs and tenants.

Each claim here is a different worker taking one chunk and keeping it (a live lease), exactly as a
worker does while it interpolates; the chunk.ready record it read is passed as the doorbell.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common import chunks, dispatch, jobs, tenants
from infiniteflow_common.db import Chunk, Job, Tenant, transaction
from infiniteflow_common.events import ChunkReady
from tests.support.chunks import full_spec

pytestmark = [pytest.mark.postgres]

MakeJob = Callable[..., Awaitable[list[ChunkReady]]]
_workers = count()


@pytest.fixture
async def make_job(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[MakeJob]:
    """Record running jobs with planned chunks (announcements kept, as the splitter keeps them)."""
    made: list[uuid.UUID] = []
    made_tenants: list[str] = []
    created = datetime.now(UTC) - timedelta(hours=1)

    async def make(
        chunk_count: int, *, tenant: str | None = None, priority: int = 0, weight: float = 1.0
    ) -> list[ChunkReady]:
        nonlocal created
        job_id = uuid.uuid4()
        created += timedelta(seconds=1)  # jobs made later are younger, whatever the clock's resolution
        async with transaction(sessions) as session:
            if tenant is not None and await session.get(Tenant, tenant) is None:
                await tenants.create_tenant(session, tenant)
                await session.execute(
                    text("update tenants set weight = :w where id = :id"), {"w": weight, "id": tenant}
                )
                made_tenants.append(tenant)
            session.add(
                Job(id=job_id, tenant_id=tenant, source="bucket", source_bucket="incoming",
                    source_key=f"t/{job_id}", source_etag="e", status="interpolating", priority=priority,
                    chunks_total=chunk_count, params={}, created_at=created)
            )  # fmt: skip
            await session.flush()
            specs = [full_spec(job_id, index) for index in range(chunk_count)]
            for spec in specs:
                session.add(
                    Chunk(job_id=job_id, chunk_index=spec.chunk_index, first_frame=0, frame_count=11,
                          spec=spec)
                )  # fmt: skip
        made.append(job_id)
        return specs

    yield make
    async with transaction(sessions) as session:
        await session.execute(text("delete from jobs where id = any(:ids)"), {"ids": made})
        await session.execute(text("delete from tenants where id = any(:ids)"), {"ids": made_tenants})


async def _claim(
    sessions: async_sessionmaker[AsyncSession], record: ChunkReady, *, fair: bool = True
) -> tuple[uuid.UUID, int] | None:
    """A fresh worker reads `record` and takes whatever dispatch gives it (None: nothing claimable)."""
    async with transaction(sessions) as session:
        got = await dispatch.claim_next(
            session, record, worker_id=f"dispatch-test-{next(_workers)}", lease_s=60, fair=fair
        )
    if isinstance(got, dispatch.NothingClaimable):
        return None
    return got.chunk.job_id, got.chunk.chunk_index


async def test_a_job_planned_behind_a_big_one_gets_the_next_free_worker(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    big = await make_job(10)
    assert await _claim(sessions, big[0]) == (big[0].job_id, 0)
    small = await make_job(2)
    # the next worker reads the big job's next record, but the small job has nothing running yet
    assert await _claim(sessions, big[1]) == (small[0].job_id, 0)
    # now each job runs one chunk: a tie, so the record's own chunk, then the jobs take turns
    assert await _claim(sessions, big[2]) == (big[0].job_id, 2)
    assert await _claim(sessions, big[3]) == (small[0].job_id, 1)
    assert await _claim(sessions, big[4]) == (big[0].job_id, 4)
    assert await _claim(sessions, big[5]) == (big[0].job_id, 5), "the small job is done being handed out"


async def test_first_come_first_served_dispatch_claims_only_the_records_own_chunk(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    big = await make_job(3)
    small = await make_job(1)
    assert await _claim(sessions, big[0], fair=False) == (big[0].job_id, 0)
    assert await _claim(sessions, big[1], fair=False) == (big[0].job_id, 1)
    assert await _claim(sessions, big[1], fair=False) is None, "its chunk is leased by a live worker"
    assert await _claim(sessions, small[0], fair=False) == (small[0].job_id, 0)


@pytest.mark.parametrize(("weight_a", "expected_a"), [(1.0, 3), (2.0, 4)])
async def test_tenants_share_the_workers_by_weight_not_by_how_many_jobs_they_run(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob, weight_a: float, expected_a: int
) -> None:
    tenant_a, tenant_b = f"fair-a-{uuid.uuid4().hex[:8]}", f"fair-b-{uuid.uuid4().hex[:8]}"
    a_jobs = [await make_job(4, tenant=tenant_a, weight=weight_a) for _ in range(3)]
    b_job = await make_job(4, tenant=tenant_b)
    owners = {spec.job_id: tenant_a for job in a_jobs for spec in job} | {b_job[0].job_id: tenant_b}
    taken, a_served = [], set()
    for worker in range(6):  # six workers free up one after another, each reading one of A's records
        claimed = await _claim(sessions, a_jobs[worker % 3][worker // 3])
        assert claimed is not None
        taken.append(owners[claimed[0]])
        if owners[claimed[0]] == tenant_a:
            a_served.add(claimed[0])
    assert taken.count(tenant_a) == expected_a, taken
    assert taken.count(tenant_b) == 6 - expected_a, taken
    assert len(a_served) == 3, "tenant A's share is spread over its jobs, not spent on its oldest"


async def test_a_tenants_higher_priority_job_goes_first_within_its_share(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    tenant = f"fair-p-{uuid.uuid4().hex[:8]}"
    big = await make_job(6, tenant=tenant)
    assert await _claim(sessions, big[0]) == (big[0].job_id, 0)
    normal = await make_job(2, tenant=tenant, priority=0)
    urgent = await make_job(2, tenant=tenant, priority=50)
    assert await _claim(sessions, big[1]) == (urgent[0].job_id, 0)
    assert await _claim(sessions, big[2]) == (urgent[0].job_id, 1)
    assert await _claim(sessions, big[3]) == (normal[0].job_id, 0)


async def test_a_cancelled_jobs_records_serve_the_other_jobs_and_its_chunks_are_never_claimed(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    cancelled = await make_job(3)
    other = await make_job(1)
    async with transaction(sessions) as session:
        await jobs.cancel(session, cancelled[0].job_id)
    assert await _claim(sessions, cancelled[0]) == (other[0].job_id, 0)
    assert await _claim(sessions, cancelled[1]) is None


async def test_a_worker_that_published_a_chunks_result_moves_on_to_the_next_chunk(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    job = await make_job(2)
    worker = f"dispatch-test-{next(_workers)}"

    async def claim(record: ChunkReady) -> dispatch.Dispatched | dispatch.NothingClaimable:
        async with transaction(sessions) as session:
            return await dispatch.claim_next(session, record, worker_id=worker, lease_s=60)

    first = await claim(job[0])
    assert isinstance(first, dispatch.Dispatched)
    again = await claim(job[0])  # its own retry of the record continues the same try
    assert isinstance(again, dispatch.Dispatched)
    assert (again.chunk.chunk_index, again.lost_attempts) == (0, 0)
    async with transaction(sessions) as session:  # the result is published; the muxer will record it
        await chunks.delivered(session, job[0].job_id, 0, again.epoch, lease_s=60)
    following = await claim(job[1])
    assert isinstance(following, dispatch.Dispatched)
    assert following.chunk.chunk_index == 1, "the delivered chunk is not taken again"


async def _preempt(
    sessions: async_sessionmaker[AsyncSession], held: ChunkReady
) -> tuple[uuid.UUID, int] | None:
    """The worker holding `held` asks, between two batches, whether a waiting chunk is owed it first."""
    async with transaction(sessions) as session:
        got = await dispatch.claim_preempting(
            session, held, worker_id=f"dispatch-test-{next(_workers)}", lease_s=60
        )
    return None if got is None else (got.chunk.job_id, got.chunk.chunk_index)


async def test_a_job_with_no_worker_pauses_a_chunk_of_a_job_that_has_several(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    big = await make_job(6)
    assert await _claim(sessions, big[0]) == (big[0].job_id, 0)
    assert await _claim(sessions, big[1]) == (big[0].job_id, 1)
    small = await make_job(2)
    assert await _preempt(sessions, big[0]) == (small[0].job_id, 0)
    # each job runs one chunk now (the paused one still counts): nobody is owed a pause any more
    assert await _preempt(sessions, big[1]) is None
    assert await _preempt(sessions, small[0]) is None, "the small job's own chunk never pauses for it"


async def test_a_worker_alone_on_a_job_is_not_paused_for_an_equal_one(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    big = await make_job(6)
    assert await _claim(sessions, big[0]) == (big[0].job_id, 0)
    await make_job(2)
    # one chunk running against none: a tie once the held chunk is set aside, so the next free
    # worker serves the newcomer (fair dispatch) and no chunk is paused for it
    assert await _preempt(sessions, big[0]) is None


async def test_a_tenant_with_no_worker_pauses_a_chunk_of_a_tenant_that_has_several(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    tenant_a, tenant_b = f"pre-a-{uuid.uuid4().hex[:8]}", f"pre-b-{uuid.uuid4().hex[:8]}"
    first, second = await make_job(3, tenant=tenant_a), await make_job(3, tenant=tenant_a)
    assert await _claim(sessions, first[0]) == (first[0].job_id, 0)
    assert await _claim(sessions, second[0]) == (second[0].job_id, 0)
    other = await make_job(1, tenant=tenant_b)
    assert await _preempt(sessions, first[0]) == (other[0].job_id, 0)
    assert await _preempt(sessions, second[0]) is None, "tenant B has one worker, A one besides the paused"


async def test_a_higher_priority_job_of_the_tenant_pauses_a_lower_one_but_not_the_reverse(
    sessions: async_sessionmaker[AsyncSession], make_job: MakeJob
) -> None:
    tenant = f"pre-p-{uuid.uuid4().hex[:8]}"
    big = await make_job(4, tenant=tenant)
    assert await _claim(sessions, big[0]) == (big[0].job_id, 0)
    await make_job(2, tenant=tenant, priority=-10)
    assert await _preempt(sessions, big[0]) is None, "a lower priority waits for a free worker"
    urgent = await make_job(2, tenant=tenant, priority=50)
    assert await _preempt(sessions, big[0]) == (urgent[0].job_id, 0)
