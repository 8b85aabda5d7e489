"""What counts as a lost try of a chunk, and the muxer's assembly claim as a fence, on real PostgreSQL.

An error nobody classified counts toward the poison-chunk rule; a database outage does not. A muxer
that lost its assembly claim stops, and can neither renew it nor complete the job.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from infiniteflow_common import jobs
from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Chunk, Job, transaction
from infiniteflow_common.deps import Deps
from infiniteflow_common.domain import JobStatus
from infiniteflow_common.events import Event, JobFailed
from services.gpu_interp.handlers import Held
from services.gpu_interp.poison import AttemptPlan
from services.muxer.config import MuxerSettings
from services.muxer.handlers import AssemblyLost, MuxHandler
from tests.support.chunks import as_delivery, chunk_row, chunk_worker, full_spec, worker_dies

pytestmark = [pytest.mark.postgres]


async def test_an_unexpected_engine_error_counts_as_a_lost_try_until_the_chunk_fails_as_poison(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cuDNN failure repeats on every worker: handed back as transient it looped the fleet forever.
    published: list[Event] = []
    worker = chunk_worker(sessions, "worker-a", published, chunk_max_attempts=2)
    tries: list[bool] = []

    def engine_for(spec: Any, *, conservative: bool = False) -> Any:
        tries.append(conservative)
        raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED in /opt/secret/lib")

    monkeypatch.setattr(worker, "_engine_for", engine_for)
    delivery = as_delivery(SchemaCatalog.load(), full_spec(job_with_chunks, 0))
    for _ in range(3):  # CHUNK_MAX_ATTEMPTS=2 tries at the worker's settings, then the conservative one
        with pytest.raises(RuntimeError):
            await worker(delivery)  # the consumer retries the record (the same worker, or the next)
    assert tries == [False, False, True]
    chunk = await chunk_row(sessions, job_with_chunks, 0)
    assert (chunk.status, chunk.attempts, chunk.lease_expires_at) == ("pending", 3, None), (
        "given back, counted"
    )

    await worker(delivery)  # the fourth claim finds three lost tries: the chunk is poison, the job fails
    assert tries == [False, False, True], "not tried again"
    async with transaction(sessions) as session:
        job = await session.get(Job, job_with_chunks)
    assert job is not None
    assert (job.status, job.error_code) == ("failed", "E_CHUNK_POISON")
    assert job.error_message is not None
    assert "all 3 attempts" in job.error_message
    assert "cuDNN" not in job.error_message, "the error's own text is for operators, not the job's user"
    [failed] = published
    assert isinstance(failed, JobFailed)
    assert (failed.error_code, failed.chunk_index) == ("E_CHUNK_POISON", 0)


async def _server_started_at(sessions: async_sessionmaker[AsyncSession]) -> datetime:
    async with transaction(sessions) as session:
        started: datetime = (await session.execute(text("select pg_postmaster_start_time()"))).scalar_one()
    return started


async def test_a_try_cut_short_by_a_database_outage_is_not_a_lost_try(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID
) -> None:
    spec = full_spec(job_with_chunks, 0)
    assert await chunk_worker(sessions, "worker-a")._claim(spec) == Held(1, AttemptPlan.NORMAL, 0)
    # PostgreSQL went down while worker-a worked: its last renewal came before the server started
    # again, its retries ran out meanwhile and it restarted as a new worker; the lease ran out.
    started = await _server_started_at(sessions)
    async with transaction(sessions) as session:
        await session.execute(
            update(Chunk).where(col(Chunk.job_id) == job_with_chunks, col(Chunk.chunk_index) == 0)
            .values(lease_expires_at=started - timedelta(seconds=1))
        )  # fmt: skip
    assert await chunk_worker(sessions, "worker-a-restarted")._claim(spec) == Held(2, AttemptPlan.NORMAL, 0)
    assert (await chunk_row(sessions, job_with_chunks, 0)).attempts == 1, "the outage's try was taken over"

    await worker_dies(sessions, job_with_chunks, 0)  # a real death since: it counts as before
    assert await chunk_worker(sessions, "worker-b")._claim(spec) == Held(3, AttemptPlan.NORMAL, 1)


@pytest.fixture
async def job_to_assemble(sessions: async_sessionmaker[AsyncSession]) -> Any:
    job_id = uuid.uuid4()
    async with transaction(sessions) as session:
        session.add(Job(id=job_id, source="bucket", source_bucket="incoming", source_key=f"t/{job_id}",
                        source_etag="e", status="interpolating", chunks_total=1, params={}))  # fmt: skip
    yield job_id
    async with transaction(sessions) as session:
        await session.execute(text("delete from jobs where id = :id"), {"id": job_id})


async def _expire_assembly_claim(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(Job).where(col(Job.id) == job_id)
            .values(mux_lease_expires_at=datetime.now().astimezone() - timedelta(seconds=1))
        )  # fmt: skip


async def _complete(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, owner: str) -> bool:
    async with transaction(sessions) as session:
        return await jobs.advance(session, job_id, JobStatus.COMPLETED, progress=100, assembly_owner=owner)


async def _claim(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, owner: str) -> bool:
    async with transaction(sessions) as session:
        claimed, _ = await jobs.claim_assembly(session, job_id, owner=owner, lease_s=30)
    return claimed


async def _renew(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, owner: str) -> bool:
    async with transaction(sessions) as session:
        return await jobs.renew_assembly(session, job_id, owner=owner, lease_s=30)


async def test_a_muxer_whose_assembly_claim_ran_out_or_was_taken_over_can_neither_renew_nor_complete(
    sessions: async_sessionmaker[AsyncSession], job_to_assemble: uuid.UUID
) -> None:
    job_id = job_to_assemble
    assert await _claim(sessions, job_id, "muxer-a")
    assert await _renew(sessions, job_id, "muxer-a")
    await _expire_assembly_claim(sessions, job_id)  # muxer-a stalled (a long GC, a frozen VM)
    assert not await _renew(sessions, job_id, "muxer-a"), "a claim that ran out is lost"
    assert not await _complete(sessions, job_id, "muxer-a"), "and cannot complete the job"

    assert await _claim(sessions, job_id, "muxer-b")  # another muxer takes the job over
    assert not await _renew(sessions, job_id, "muxer-a")
    assert not await _complete(sessions, job_id, "muxer-a")
    async with transaction(sessions) as session:
        job = await session.get(Job, job_id)
    assert job is not None
    assert (job.status, job.mux_owner) == ("muxing", "muxer-b")
    assert await _complete(sessions, job_id, "muxer-b"), "the claim's holder completes it"


def _muxer(sessions: async_sessionmaker[AsyncSession], published: list[Event]) -> MuxHandler:
    async def publish(topic: str, event: Event) -> None:
        published.append(event)

    deps = Deps(sessions=sessions, storage=None, catalog=SchemaCatalog.load(), publish=publish)  # type: ignore[arg-type]
    return MuxHandler(settings=MuxerSettings(assembly_lease_s=1.5), deps=deps)


async def test_a_muxer_that_finds_its_claim_taken_over_stops_the_assembly_before_uploading(
    sessions: async_sessionmaker[AsyncSession], job_to_assemble: uuid.UUID
) -> None:
    job_id = job_to_assemble
    muxer = _muxer(sessions, [])
    assert await muxer._claim(job_id)
    await _expire_assembly_claim(sessions, job_id)
    assert await _claim(sessions, job_id, "muxer-b")

    lost = threading.Event()
    keeper = asyncio.create_task(muxer._keep_claim(job_id, lost))
    try:
        assert await asyncio.to_thread(lost.wait, 5), "the failed renewal marks the claim lost"
    finally:
        keeper.cancel()
    async with transaction(sessions) as session:
        job = await session.get(Job, job_id)
    assert job is not None
    with pytest.raises(AssemblyLost):  # the build stops at its next step; nothing is fetched or uploaded
        muxer._build(
            job,
            None,  # type: ignore[arg-type]  # never read: the build stops first
            [Chunk(job_id=job_id, chunk_index=0, first_frame=0, frame_count=1, output_key="k")],
            "out.mp4",
            lost,
        )
