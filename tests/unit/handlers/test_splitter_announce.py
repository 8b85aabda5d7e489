"""What the splitter announces for a job: `chunk.ready` per chunk (keyed, spread over the partitions),
then `job.split`; and what its consumer refuses before looking the job up.

Recording the split request, the planner's leases and which chunks are still to do need PostgreSQL
(tests/integration/test_source_gone.py, tests/e2e); here the announcements go to an in-memory `Publish`
that reads each event back through the Avro contract.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.deps import Deps
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.events import ChunkReady, JobSplit
from infiniteflow_common.topics import Topic, topic_specs
from services.splitter.handlers import SplitHandler, announce, spec_offset
from tests.support.chunks import full_spec
from tests.support.in_memory import InMemoryPublish, delivery_of

PARTITIONS = topic_specs()[Topic.CHUNK_READY].partitions
AT = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def job_at_offset(offset: int) -> uuid.UUID:
    """A job whose first chunk goes to partition `offset`."""
    return uuid.UUID(int=(0x5F0C6C1E << 96) + offset)


def specs(job_id: uuid.UUID, *indexes: int) -> list[ChunkReady]:
    return [full_spec(job_id, index) for index in indexes]


def plan_of(job_id: uuid.UUID, chunks: int) -> JobSplit:
    return JobSplit(
        job_id=job_id, chunk_count=chunks, source_frame_count=30 * chunks, in_fps_num=30, in_fps_den=1,
        out_fps_num=60, out_fps_den=1, out_frame_count=60 * chunks, scene_cuts=(0,), vfr_converted=False,
        split_at=AT,
    )  # fmt: skip


async def test_a_split_job_announces_each_chunk_in_order_then_its_plan_last(publish: InMemoryPublish) -> None:
    job_id = job_at_offset(0)
    chunks = specs(job_id, 0, 1, 2)
    await announce(publish, job_id, chunks, plan_of(job_id, 3))

    assert [p.topic for p in publish.published] == [Topic.CHUNK_READY] * 3 + [Topic.JOB_SPLIT]
    assert publish.on(Topic.CHUNK_READY) == chunks, "each announcement reads back as it was planned"
    assert publish.on(Topic.JOB_SPLIT) == [plan_of(job_id, 3)]


async def test_a_chunk_is_keyed_by_job_and_index_and_the_plan_by_the_job(publish: InMemoryPublish) -> None:
    job_id = job_at_offset(0)
    await announce(publish, job_id, specs(job_id, 0, 1), plan_of(job_id, 2))

    assert [p.key for p in publish.published] == [f"{job_id}/0", f"{job_id}/1", None]
    assert publish.published[-1].partition is None, "the plan goes where its key (the job id) hashes"


async def test_a_jobs_chunks_go_round_robin_from_its_own_partition_and_wrap_around(
    publish: InMemoryPublish,
) -> None:
    job_id = job_at_offset(PARTITIONS - 2)
    await announce(publish, job_id, specs(job_id, 0, 1, 2, 3), None)

    assert [p.partition for p in publish.published] == [PARTITIONS - 2, PARTITIONS - 1, 0, 1]


async def test_a_chunk_announced_again_goes_to_the_partition_it_went_to_first(
    publish: InMemoryPublish,
) -> None:
    # a replay of a split job re-announces only the chunks not done yet: 2 and 5 of 0…5
    job_id = job_at_offset(3)
    await announce(publish, job_id, specs(job_id, 0, 1, 2, 3, 4, 5), None)
    first = {p.key: p.partition for p in publish.published}
    publish.published.clear()

    await announce(publish, job_id, specs(job_id, 2, 5), None)

    assert {p.key: p.partition for p in publish.published} == {
        f"{job_id}/2": first[f"{job_id}/2"],
        f"{job_id}/5": first[f"{job_id}/5"],
    }


async def test_without_a_plan_only_chunks_are_announced(publish: InMemoryPublish) -> None:
    job_id = job_at_offset(1)
    await announce(publish, job_id, specs(job_id, 4), None)
    assert [p.topic for p in publish.published] == [Topic.CHUNK_READY]


async def test_nothing_left_to_do_and_no_plan_announces_nothing(publish: InMemoryPublish) -> None:
    await announce(publish, job_at_offset(0), [], None)
    assert publish.published == []


def test_concurrent_jobs_start_on_different_partitions_and_one_job_always_on_the_same() -> None:
    jobs = [uuid.uuid4() for _ in range(64)]
    offsets = [spec_offset(job_id, PARTITIONS) for job_id in jobs]
    assert offsets == [spec_offset(job_id, PARTITIONS) for job_id in jobs]
    assert set(offsets) == set(range(PARTITIONS)), "64 jobs use every partition to start on"


async def test_a_record_that_is_not_an_upload_is_refused_before_the_job_is_looked_up(
    schema_catalog: SchemaCatalog, publish: InMemoryPublish
) -> None:
    woken: list[bool] = []
    # unbound: a handler that reached the database would raise, not connect
    deps = Deps(sessions=async_sessionmaker(), storage=None, catalog=schema_catalog, publish=publish)  # type: ignore[arg-type]
    handler = SplitHandler(deps=deps, wake=lambda: woken.append(True))
    job_id = job_at_offset(0)
    wrong = delivery_of(schema_catalog, plan_of(job_id, 1), topic=Topic.VIDEO_UPLOADED)

    with pytest.raises(InvalidMessage) as refused:
        await handler(wrong)
    assert refused.value.code == "E_UNEXPECTED_RECORD"
    assert (woken, publish.published) == ([], [])
