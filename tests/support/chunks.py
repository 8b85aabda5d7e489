"""A job split into chunks in PostgreSQL and the worker and muxer calls the chunk tests make against it.

`sessions` and `job_with_chunks` are fixtures (registered in tests/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Chunk, Job, make_engine, session_factory, transaction
from infiniteflow_common.deps import Deps
from infiniteflow_common.events import ChunkReady, Event, OutputSlot, SourceRange, VideoEncoding, encode_event
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.settings import CommonSettings
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.handlers import ChunkHandler


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


def as_delivery(catalog: SchemaCatalog, event: Event) -> Delivery:
    return Delivery("t", 0, 0, None, encode_event(catalog, event), {})


def chunk_ready(job_id: uuid.UUID, index: int) -> ChunkReady:
    return ChunkReady(
        job_id=job_id, chunk_index=index, chunk_count=2, object_key="k", first_frame=0, frame_count=11,
        first_output_frame=0, shares_last_frame=True, ends_scene=False, timesteps=(OutputSlot(source_offset=0, t=0.0),),
        engine="flow", quality="fast", width=16, height=16, pix_fmt="yuv420p", attempt=1,
    )  # fmt: skip


def chunk_worker(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    published: list[Event] | None = None,
    **overrides: Any,
) -> ChunkHandler:
    settings = WorkerSettings(worker_id=name, lease_seconds=30, **overrides)

    async def publish(topic: str, event: Event) -> None:
        if published is None:
            raise AssertionError("not expected")
        published.append(event)

    deps = Deps(sessions=sessions, storage=None, catalog=SchemaCatalog.load(), publish=publish)  # type: ignore[arg-type]
    return ChunkHandler(settings=settings, deps=deps, engines=EngineCache(settings))


async def worker_dies(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, index: int) -> None:
    """The chunk's worker is SIGKILLed: no result, no hand-back, its lease simply runs out."""
    async with transaction(sessions) as session:
        await session.execute(
            update(Chunk).where(col(Chunk.job_id) == job_id, col(Chunk.chunk_index) == index)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )  # fmt: skip


async def chunk_row(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, index: int) -> Chunk:
    async with transaction(sessions) as session:
        row = await session.get(Chunk, (job_id, index))
    assert row is not None
    return row


def full_spec(job_id: uuid.UUID, index: int) -> ChunkReady:
    """A chunk as the splitter announces it now (pinned source range, the job's encoding)."""
    source = SourceRange(
        bucket="incoming", key=f"t/{job_id}", version_id=None, etag="e", size_bytes=1, time_base_num=1,
        time_base_den=25, frame_pts=None, frame_indices=tuple(range(11)),
    )  # fmt: skip
    encoding = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=20, preset="medium")
    return chunk_ready(job_id, index).model_copy(
        update={"source": source, "encoding": encoding, "out_fps_num": 50, "out_fps_den": 1}
    )
