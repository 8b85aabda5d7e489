"""Chunk leases fence evicted workers, and the muxer counts each chunk result exactly once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from infiniteflow_common import chunks
from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Chunk, Job, make_engine, session_factory, transaction
from infiniteflow_common.deps import Deps
from infiniteflow_common.events import ChunkInterpolated, ChunkReady, Event, OutputSlot, encode_event
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.settings import CommonSettings
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.handlers import ChunkHandler
from services.muxer.config import MuxerSettings
from services.muxer.handlers import MuxHandler

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def sessions(settings: CommonSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url.get_secret_value())
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def job_with_chunks(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[uuid.UUID]:
    """A job split into two pending chunks (deleted afterwards)."""
    job_id = uuid.uuid4()
    async with transaction(sessions) as session:
        session.add(Job(id=job_id, source="bucket", source_bucket="incoming", source_key=f"t/{job_id}", source_etag="e",
                        status="interpolating", chunks_total=2, params={}))  # fmt: skip
        await session.flush()
        for index in range(2):
            session.add(Chunk(job_id=job_id, chunk_index=index, first_frame=index * 10, frame_count=11))
    yield job_id
    async with transaction(sessions) as session:
        await session.execute(text("delete from jobs where id = :id"), {"id": job_id})


def _delivery(catalog: SchemaCatalog, event: Event) -> Delivery:
    return Delivery("t", 0, 0, None, encode_event(catalog, event), {})


def _ready(job_id: uuid.UUID, index: int) -> ChunkReady:
    return ChunkReady(
        job_id=job_id, chunk_index=index, chunk_count=2, object_key="k", first_frame=0, frame_count=11,
        first_output_frame=0, shares_last_frame=True, ends_scene=False, timesteps=(OutputSlot(source_offset=0, t=0.0),),
        engine="flow", quality="fast", width=16, height=16, pix_fmt="yuv420p", attempt=1,
    )  # fmt: skip


def _worker(sessions: async_sessionmaker[AsyncSession], name: str) -> ChunkHandler:
    settings = WorkerSettings(worker_id=name, lease_seconds=30)

    async def publish(topic: str, event: Event) -> None:
        raise AssertionError("not expected")

    deps = Deps(sessions=sessions, storage=None, catalog=SchemaCatalog.load(), publish=publish)  # type: ignore[arg-type]
    return ChunkHandler(settings=settings, deps=deps, engines=EngineCache(settings))


async def test_a_live_lease_keeps_other_workers_off_and_an_expired_one_is_taken_over_with_a_new_epoch(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID
) -> None:
    first, second = _worker(sessions, "worker-a"), _worker(sessions, "worker-b")
    spec = _ready(job_with_chunks, 0)
    assert await first._claim(spec) == 1
    async with transaction(sessions) as session:
        attempt = await chunks.claim(session, job_with_chunks, 0, worker_id="worker-b", lease_s=30)
    assert attempt.epoch is None
    assert not attempt.done
    assert attempt.leased_until is not None, "a live lease keeps other workers off"
    async with transaction(sessions) as session:  # worker-a stalls past its lease (SIGSTOP, GC pause, …)
        await session.execute(
            update(Chunk).where(col(Chunk.job_id) == job_with_chunks, col(Chunk.chunk_index) == 0)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )  # fmt: skip
    assert await second._claim(spec) == 2
    assert not await first._renew(spec, 1), "the evicted worker learns it lost the chunk"
    assert await second._renew(spec, 2)


async def test_the_muxer_counts_a_result_once_and_refuses_a_stale_epoch(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID
) -> None:
    catalog = SchemaCatalog.load()
    published: list[Event] = []

    async def publish(topic: str, event: Event) -> None:
        published.append(event)

    deps = Deps(sessions=sessions, storage=None, catalog=catalog, publish=publish)  # type: ignore[arg-type]
    muxer = MuxHandler(settings=MuxerSettings(), deps=deps)
    worker = _worker(sessions, "worker-a")
    epoch0 = await worker._claim(_ready(job_with_chunks, 0))
    epoch1 = await worker._claim(_ready(job_with_chunks, 1))

    def result(index: int, epoch: int) -> ChunkInterpolated:
        return ChunkInterpolated(
            job_id=job_with_chunks, chunk_index=index, object_key=f"r{index}", frames_out=20, worker_id="worker-a",
            lease_epoch=epoch, attempt=1, engine="flow", device="cpu", scale=1.0, interp_seconds=1.0,
            finished_at=datetime.now(UTC),
        )  # fmt: skip

    await muxer.on_chunk(_delivery(catalog, result(0, epoch0)))
    await muxer.on_chunk(_delivery(catalog, result(0, epoch0)))  # delivered twice
    await muxer.on_chunk(_delivery(catalog, result(1, epoch1 - 1)))  # a late result of an older lease
    async with transaction(sessions) as session:
        job = await session.get(Job, job_with_chunks)
        chunk1 = await session.get(Chunk, (job_with_chunks, 1))
    assert job is not None
    assert job.chunks_done == 1
    assert job.status == "interpolating", "not assembled: chunk 1 is still out"
    assert chunk1 is not None
    assert chunk1.status == "claimed"
    assert 15 < job.progress < 90
    assert published == []


async def test_a_worker_that_finds_a_chunk_leased_waits_for_the_lease_and_takes_over(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID
) -> None:
    import time

    stalled = _worker(sessions, "worker-a")
    spec = _ready(job_with_chunks, 1)
    assert await stalled._claim(spec) == 1
    async with transaction(sessions) as session:  # its lease runs out in 1.5 s and is never renewed
        await session.execute(
            update(Chunk).where(col(Chunk.job_id) == job_with_chunks, col(Chunk.chunk_index) == 1)
            .values(lease_expires_at=datetime.now(UTC) + timedelta(seconds=1.5))
        )  # fmt: skip
    started = time.monotonic()
    assert await _worker(sessions, "worker-b")._claim(spec) == 2
    assert 1.0 < time.monotonic() - started < 10
