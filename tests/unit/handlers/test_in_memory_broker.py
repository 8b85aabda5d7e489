"""The consumer wiring a service runs (`Runtime.consume` + `subscribe` on `make_broker`'s broker), driven
by faststream's `TestKafkaBroker`: records published to a topic reach the handler decoded, bad ones go
to the topic's DLQ, and offsets are committed only past records that were handled or dead-lettered.

The same paths against a real Kafka are tests/integration/test_source_event_input.py and the worker's
real-stack tests; here nothing listens on a socket.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from faststream.confluent import TestKafkaBroker
from sqlalchemy.ext.asyncio import async_sessionmaker

from infiniteflow_common.deps import Deps
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.events import ChunkReady, encode_event
from infiniteflow_common.kafka import H_ERROR_CODE, H_ORIGIN_TOPIC, Delivery, subscribe
from infiniteflow_common.minio_events import ObjectCreated
from infiniteflow_common.runtime import Runtime
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.topics import Topic
from services.gpu_interp.claims import Held
from services.gpu_interp.config import WorkerSettings
from services.gpu_interp.engine_registry import EngineCache
from services.gpu_interp.handlers import ChunkHandler
from services.ingest.source_events import SourceEventHandler
from tests.support.chunks import full_spec
from tests.support.in_memory import InMemoryPublish, join_in_memory, watch_dead_letters

EXAMPLES = Path(__file__).resolve().parents[3] / "schemas" / "examples"
SETTINGS = CommonSettings(retry_max_attempts=3, retry_base_delay_s=0.001, retry_max_delay_s=0.001)


def minio_notification(bucket: str, key: str) -> bytes:
    record = {
        "eventName": "s3:ObjectCreated:Put",
        "eventTime": "2026-11-23T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 3, "eTag": "abc"}},
    }
    return json.dumps({"EventName": "s3:ObjectCreated:Put", "Records": [record]}).encode()


async def test_ingest_starts_a_job_per_upload_and_dead_letters_a_notification_that_is_not_json() -> None:
    started: list[ObjectCreated] = []

    async def start_job(record: ObjectCreated) -> None:
        started.append(record)

    runtime = Runtime(SETTINGS, "ingest")
    runtime.consume(Topic.MINIO_EVENTS, SourceEventHandler(incoming_bucket="incoming", start_job=start_job))
    subscribe(runtime.broker, *runtime.consumers, group_id=runtime.service)
    dead = watch_dead_letters(runtime.broker, runtime.catalog, Topic.MINIO_EVENTS)
    member = join_in_memory(runtime.broker)

    upload = minio_notification("incoming", "my+clip.mp4")

    async with TestKafkaBroker(runtime.broker) as broker:
        await broker.publish(upload, Topic.MINIO_EVENTS, key=b"incoming/a")
        await broker.publish(b"{not json", Topic.MINIO_EVENTS, key=b"incoming/b")

    assert [(r.bucket, r.key, r.etag) for r in started] == [("incoming", "my clip.mp4", "abc")]
    [letter] = dead
    assert (letter.envelope.error_code, letter.envelope.service) == ("E_SOURCE_EVENT_MALFORMED", "ingest")
    assert (letter.envelope.payload, letter.envelope.key) == (b"{not json", b"incoming/b")
    assert letter.envelope.job_id is None, "a MinIO key names no job: nothing to fail"
    assert letter.headers[H_ORIGIN_TOPIC] == Topic.MINIO_EVENTS
    # TestKafkaBroker puts every record at offset 0: each commit is past the record just handled
    assert member.committed == [(Topic.MINIO_EVENTS, 0, 1), (Topic.MINIO_EVENTS, 0, 1)]
    assert runtime.exit_code == 0


def chunk_worker(publish: InMemoryPublish) -> tuple[Runtime, ChunkHandler, list[ChunkReady]]:
    """The worker's consumer; its claim step (PostgreSQL) records the chunk and finds nothing to claim.

    The session factory is unbound: a step that reached the database would fail, never connect.
    """
    runtime = Runtime(SETTINGS, "gpu_interp")
    settings = WorkerSettings(worker_id="in-memory")
    deps = Deps(sessions=async_sessionmaker(), storage=None, catalog=runtime.catalog, publish=publish)  # type: ignore[arg-type]
    handler = ChunkHandler(settings=settings, deps=deps, engines=EngineCache(settings))
    asked: list[ChunkReady] = []

    async def claim(record: ChunkReady) -> Held | None:
        asked.append(record)
        return None

    handler._claim = claim
    return runtime, handler, asked


async def test_a_worker_receives_each_chunk_decoded_and_dead_letters_what_it_cannot_work_on(
    publish: InMemoryPublish,
) -> None:
    runtime, handler, asked = chunk_worker(publish)
    consumer = runtime.consume(Topic.CHUNK_READY, handler)
    failed: list[tuple[Delivery, InvalidMessage]] = []

    async def fail_job(delivery: Delivery, error: InvalidMessage) -> None:
        # `Runtime._fail_job_of` records the failure in PostgreSQL: the real-stack tests cover that
        failed.append((delivery, error))

    consumer.on_dead_letter = fail_job
    subscribe(runtime.broker, consumer, group_id=runtime.service)
    dead = watch_dead_letters(runtime.broker, runtime.catalog, Topic.CHUNK_READY)
    member = join_in_memory(runtime.broker)
    chunk = full_spec(uuid.uuid4(), 3).model_copy(update={"engine": "rife", "model": "hdv3"})
    v1 = bytes.fromhex("".join((EXAMPLES / "ChunkReady.v1.golden.hex").read_text().split()))
    v1_job = json.loads((EXAMPLES / "ChunkReady.v1.json").read_text())["job_id"]

    async with TestKafkaBroker(runtime.broker) as broker:
        key = f"{chunk.job_id}/3".encode()
        await broker.publish(encode_event(runtime.catalog, chunk), Topic.CHUNK_READY, key=key)
        await broker.publish(b"not avro", Topic.CHUNK_READY, key=key)
        await broker.publish(v1, Topic.CHUNK_READY, key=f"{v1_job}/2".encode())

    assert asked == [chunk], "the claim step got the chunk exactly as the splitter announced it"
    assert [(d.envelope.error_code, d.headers[H_ERROR_CODE]) for d in dead] == [
        ("E_DECODE", "E_DECODE"),
        ("E_CHUNK_OUTDATED", "E_CHUNK_OUTDATED"),
    ]
    assert [str(d.envelope.job_id) for d in dead] == [str(chunk.job_id), v1_job]
    assert dead[1].envelope.payload == v1, "the DLQ keeps the record's bytes for a replay"
    assert [(d.key, e.code) for d, e in failed] == [
        (f"{chunk.job_id}/3".encode(), "E_DECODE"),
        (f"{v1_job}/2".encode(), "E_CHUNK_OUTDATED"),
    ]
    assert "upload the video again" in failed[1][1].message
    assert member.committed == [(Topic.CHUNK_READY, 0, 1)] * 3
    assert publish.published == [], "nothing announced for a chunk nobody worked on"


async def test_a_chunk_whose_claim_fails_for_a_transient_reason_is_read_again_not_committed(
    publish: InMemoryPublish,
) -> None:
    runtime, handler, asked = chunk_worker(publish)

    async def claim(record: ChunkReady) -> Held | None:
        asked.append(record)
        raise ConnectionRefusedError("database unreachable")

    handler._claim = claim
    consumer = runtime.consume(Topic.CHUNK_READY, handler)
    subscribe(runtime.broker, consumer, group_id=runtime.service)
    dead = watch_dead_letters(runtime.broker, runtime.catalog, Topic.CHUNK_READY)
    member = join_in_memory(runtime.broker)
    chunk = full_spec(uuid.uuid4(), 0).model_copy(update={"engine": "rife", "model": "hdv3"})

    async with TestKafkaBroker(runtime.broker) as broker:
        await broker.publish(encode_event(runtime.catalog, chunk), Topic.CHUNK_READY, key=f"{chunk.job_id}/0")

    assert asked == [chunk]
    assert member.sought == [(Topic.CHUNK_READY, 0, 0)], "sought back to the same record"
    assert member.committed == []
    assert dead == []
    assert consumer.fatal is None, "one failure of three allowed: still consuming"
