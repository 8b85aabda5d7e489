"""What a GPU worker refuses before it claims a chunk: records that are not chunks, and chunks planned
before workers encoded their own output.

Claiming, leases, fair dispatch and the work itself need PostgreSQL, MinIO and an engine
(tests/integration/test_chunk_lifecycle.py, test_work_lost.py, tests/e2e); here the claim step only
records what it was asked, through an unbound session factory that would fail, never connect.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.deps import Deps
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.events import ChunkReady, decode_event
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.topics import Topic
from services.gpu_interp.claims import Held
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.handlers import ChunkHandler, _refuse_outdated
from tests.support.chunks import full_spec
from tests.support.in_memory import InMemoryPublish, delivery_of

EXAMPLES = Path(__file__).resolve().parents[3] / "schemas" / "examples"


def example(version: int, record: str = "ChunkReady") -> bytes:
    """The golden payload of `record` as a producer of that schema version wrote it."""
    return bytes.fromhex("".join((EXAMPLES / f"{record}.v{version}.golden.hex").read_text().split()))


@pytest.mark.parametrize("version", [2, 3, 4])
def test_a_chunk_planned_since_workers_encode_their_own_output_is_worked_on(
    schema_catalog: SchemaCatalog, version: int
) -> None:
    _refuse_outdated(decode_event(schema_catalog, example(version), ChunkReady))


def test_a_chunk_planned_before_workers_encoded_their_own_output_is_refused_for_good(
    schema_catalog: SchemaCatalog,
) -> None:
    chunk = decode_event(schema_catalog, example(1), ChunkReady)
    with pytest.raises(InvalidMessage) as refused:
        _refuse_outdated(chunk)
    assert refused.value.code == "E_CHUNK_OUTDATED"
    assert f"chunk {chunk.chunk_index} of job {chunk.job_id}" in refused.value.message
    assert "upload the video again" in refused.value.message, "the user is told what to do"


@pytest.mark.parametrize(
    "missing",
    [{"source": None}, {"encoding": None}, {"out_fps_num": 0}],
    ids=["no-source-range", "no-encoding", "no-output-rate"],
)
def test_a_chunk_lacking_any_of_source_range_encoding_or_output_rate_is_refused(
    missing: dict[str, object],
) -> None:
    chunk = full_spec(uuid.uuid4(), 0).model_copy(update=missing)
    with pytest.raises(InvalidMessage, match="ChunkReady v1"):
        _refuse_outdated(chunk)


def worker(catalog: SchemaCatalog, publish: InMemoryPublish) -> tuple[ChunkHandler, list[ChunkReady]]:
    settings = WorkerSettings(worker_id="in-memory")
    deps = Deps(sessions=async_sessionmaker(), storage=None, catalog=catalog, publish=publish)  # type: ignore[arg-type]
    handler = ChunkHandler(settings=settings, deps=deps, engines=EngineCache(settings))
    asked: list[ChunkReady] = []

    async def claim(record: ChunkReady) -> Held | None:
        asked.append(record)
        return None

    handler._claim = claim
    return handler, asked


async def test_an_outdated_chunk_is_refused_before_the_worker_claims_anything(
    schema_catalog: SchemaCatalog, publish: InMemoryPublish
) -> None:
    handler, asked = worker(schema_catalog, publish)
    outdated = full_spec(uuid.uuid4(), 1).model_copy(update={"encoding": None})

    with pytest.raises(InvalidMessage) as refused:
        await handler(delivery_of(schema_catalog, outdated, topic=Topic.CHUNK_READY))
    assert refused.value.code == "E_CHUNK_OUTDATED"
    assert (asked, publish.published) == ([], [])


async def test_a_record_that_is_not_a_chunk_is_refused_before_the_worker_claims_anything(
    schema_catalog: SchemaCatalog, publish: InMemoryPublish
) -> None:
    handler, asked = worker(schema_catalog, publish)

    with pytest.raises(InvalidMessage) as refused:
        await handler(Delivery(Topic.CHUNK_READY, 0, 0, None, example(2, "JobSplit"), {}))
    assert refused.value.code == "E_UNEXPECTED_RECORD"
    assert asked == []


async def test_a_current_chunk_reaches_the_claim_step_as_it_was_announced(
    schema_catalog: SchemaCatalog, publish: InMemoryPublish
) -> None:
    handler, asked = worker(schema_catalog, publish)
    chunk = full_spec(uuid.uuid4(), 2).model_copy(update={"engine": "rife", "model": "hdv3"})

    await handler(delivery_of(schema_catalog, chunk, topic=Topic.CHUNK_READY))  # nothing to claim: returns

    assert asked == [chunk]
    assert publish.published == [], "a chunk nobody claimed announces nothing"
