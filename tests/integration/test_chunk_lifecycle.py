"""Chunk leases fence evicted workers, and the muxer counts each chunk result exactly once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from infiniteflow_common import chunks
from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Chunk, Job, transaction
from infiniteflow_common.deps import Deps
from infiniteflow_common.errors import TransientError
from infiniteflow_common.events import (
    ChunkInterpolated,
    ChunkReady,
    Event,
    JobFailed,
)
from services.gpu_interp import metrics
from services.gpu_interp.handlers import ChunkHandler, Held
from services.gpu_interp.poison import AttemptPlan
from services.muxer.config import MuxerSettings
from services.muxer.handlers import MuxHandler
from tests.support.chunks import as_delivery, chunk_ready, chunk_row, chunk_worker, full_spec, worker_dies

pytestmark = [pytest.mark.postgres]


async def _epoch(worker: ChunkHandler, spec: ChunkReady) -> int | None:
    held = await worker._claim(spec)
    return None if held is None else held.epoch


async def test_a_live_lease_keeps_other_workers_off_and_an_expired_one_is_taken_over_with_a_new_epoch(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID
) -> None:
    first, second = chunk_worker(sessions, "worker-a"), chunk_worker(sessions, "worker-b")
    spec = chunk_ready(job_with_chunks, 0)
    assert await _epoch(first, spec) == 1
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
    assert await _epoch(second, spec) == 2
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
    epoch0 = await _epoch(chunk_worker(sessions, "worker-a"), chunk_ready(job_with_chunks, 0))
    epoch1 = await _epoch(chunk_worker(sessions, "worker-b"), chunk_ready(job_with_chunks, 1))

    def result(index: int, epoch: int) -> ChunkInterpolated:
        return ChunkInterpolated(
            job_id=job_with_chunks, chunk_index=index, object_key=f"r{index}", frames_out=20, worker_id="worker-a",
            lease_epoch=epoch, attempt=1, engine="flow", device="cpu", scale=1.0, interp_seconds=1.0,
            finished_at=datetime.now(UTC),
        )  # fmt: skip

    await muxer.on_chunk(as_delivery(catalog, result(0, epoch0)))
    await muxer.on_chunk(as_delivery(catalog, result(0, epoch0)))  # delivered twice
    await muxer.on_chunk(as_delivery(catalog, result(1, epoch1 - 1)))  # a late result of an older lease
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

    stalled = chunk_worker(sessions, "worker-a")
    spec = chunk_ready(job_with_chunks, 1)
    assert await _epoch(stalled, spec) == 1
    async with transaction(sessions) as session:  # its lease runs out in 1.5 s and is never renewed
        await session.execute(
            update(Chunk).where(col(Chunk.job_id) == job_with_chunks, col(Chunk.chunk_index) == 1)
            .values(lease_expires_at=datetime.now(UTC) + timedelta(seconds=1.5))
        )  # fmt: skip
    started = time.monotonic()
    assert await _epoch(chunk_worker(sessions, "worker-b"), spec) == 2
    assert 1.0 < time.monotonic() - started < 10


async def test_a_hand_back_or_a_retry_in_the_same_process_is_not_a_lost_attempt_but_a_dead_workers_try_is(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID
) -> None:
    spec = chunk_ready(job_with_chunks, 0)
    first = chunk_worker(sessions, "worker-a")
    assert await first._claim(spec) == Held(1, AttemptPlan.NORMAL, 0)
    assert await first._claim(spec) == Held(2, AttemptPlan.NORMAL, 0), "its own retry continues its try"
    assert (await chunk_row(sessions, job_with_chunks, 0)).attempts == 1
    await first._release(spec, 2)  # stopping (SIGTERM), a transient error, or a cancel: a hand-back
    handed_back = await chunk_row(sessions, job_with_chunks, 0)
    assert (handed_back.status, handed_back.attempts) == ("pending", 0), "the hand-back gave its try back"
    assert await chunk_worker(sessions, "worker-b")._claim(spec) == Held(3, AttemptPlan.NORMAL, 0)
    await worker_dies(sessions, job_with_chunks, 0)
    assert await chunk_worker(sessions, "worker-c")._claim(spec) == Held(4, AttemptPlan.NORMAL, 1)
    assert (await chunk_row(sessions, job_with_chunks, 0)).attempts == 2


async def test_a_chunk_whose_workers_keep_dying_gets_one_conservative_try_then_fails_its_job_with_e_chunk_poison(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = SchemaCatalog.load()
    spec = full_spec(job_with_chunks, 0)
    delivery = as_delivery(catalog, spec)
    plans: list[Held | None] = []
    for life in range(2):  # CHUNK_MAX_ATTEMPTS=2 tries at the worker's settings, each killed
        plans.append(await chunk_worker(sessions, f"life-{life}", chunk_max_attempts=2)._claim(spec))
        await worker_dies(sessions, job_with_chunks, 0)
    assert plans == [Held(1, AttemptPlan.NORMAL, 0), Held(2, AttemptPlan.NORMAL, 1)]

    conservative = chunk_worker(sessions, "life-2", chunk_max_attempts=2)
    tried: list[tuple[int, bool]] = []

    async def work(
        spec: ChunkReady, epoch: int, *, conservative: bool = False, in_pause: bool = False
    ) -> None:
        tried.append((epoch, conservative))  # …and the worker is killed in the middle of it

    monkeypatch.setattr(conservative, "_work", work)
    await conservative(delivery)
    assert tried == [(3, True)], "the third try runs at the lightest settings"
    await worker_dies(sessions, job_with_chunks, 0)

    poison_before = metrics.CHUNKS.labels("poison")._value.get()
    published: list[Event] = []
    last = chunk_worker(sessions, "life-3", published, chunk_max_attempts=2)
    monkeypatch.setattr(last, "_work", work)
    await last(delivery)  # handled: the record is committed, nothing raised for the consumer to retry
    assert tried == [(3, True)], "a poison chunk is not tried again"
    async with transaction(sessions) as session:
        job = await session.get(Job, job_with_chunks)
    assert job is not None
    assert (job.status, job.error_code) == ("failed", "E_CHUNK_POISON")
    assert job.error_message is not None
    assert "chunk 0" in job.error_message
    assert "all 3 attempts" in job.error_message
    [failed] = published
    assert isinstance(failed, JobFailed)
    assert (failed.error_code, failed.chunk_index, failed.stage) == ("E_CHUNK_POISON", 0, "gpu_interp")
    chunk = await chunk_row(sessions, job_with_chunks, 0)
    assert (chunk.status, chunk.attempts, chunk.lease_expires_at) == ("failed", 4, None)
    assert metrics.CHUNKS.labels("poison")._value.get() == poison_before + 1

    await last(delivery)  # the record read again (a replay): the job is final, nothing changes
    assert len(published) == 1


async def test_a_transient_failure_hands_the_chunk_back_without_counting_a_lost_attempt(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = chunk_worker(sessions, "worker-a")

    def engine_for(spec: ChunkReady, *, conservative: bool = False) -> Any:
        raise TransientError("the model store is unreachable")

    monkeypatch.setattr(worker, "_engine_for", engine_for)
    delivery = as_delivery(SchemaCatalog.load(), full_spec(job_with_chunks, 1))
    for _ in range(4):  # the consumer's retries, then its give-up and a restart: never a death
        with pytest.raises(TransientError):
            await worker(delivery)
    chunk = await chunk_row(sessions, job_with_chunks, 1)
    assert (chunk.status, chunk.attempts, chunk.lease_epoch) == ("pending", 0, 4)
    held = await chunk_worker(sessions, "worker-b", chunk_max_attempts=1)._claim(
        full_spec(job_with_chunks, 1)
    )
    assert held == Held(5, AttemptPlan.NORMAL, 0), "a restarted worker starts afresh"
