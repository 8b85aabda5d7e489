"""Helpers for the ingest tests on the real stack: a started runtime, topic reads, MinIO events."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaException, TopicPartition
from minio.deleteobjects import DeleteObject
from sqlalchemy import select
from sqlmodel import col

from infiniteflow_common.db import Job
from infiniteflow_common.minio_events import ObjectCreated, parse_notification
from infiniteflow_common.outbox import Outbox, Send
from infiniteflow_common.runtime import Runtime
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import ensure_buckets, ensure_kafka_notification, make_client
from services.ingest.config import IngestSettings
from services.ingest.start import JobStarter, object_record
from services.ingest.sweeper import user_metadata
from tests.integration.kafka_support import private_topic


def isolated_settings(**overrides: Any) -> IngestSettings:
    """Settings whose incoming bucket is private to one test module.

    A live ingest (`make demo`, e2e runs) consumes the real `incoming` bucket's events; a private bucket
    keeps these tests from racing it (it ignores other buckets' events).
    """
    fields: dict[str, Any] = {"metrics_port": None, "incoming_bucket": f"ingest-test-{uuid.uuid4().hex[:12]}"}
    return IngestSettings(**(fields | overrides))


@contextmanager
def private_bucket(settings: IngestSettings) -> Iterator[str]:
    """Create the settings' incoming bucket with MinIO's Kafka notification; empty and delete it after."""
    client = make_client(settings)
    bucket = settings.incoming_bucket
    ensure_buckets(client, [bucket])
    ensure_kafka_notification(client, bucket)
    try:
        yield bucket
    finally:
        names = [o.object_name for o in client.list_objects(bucket, recursive=True)]
        errors = list(client.remove_objects(bucket, [DeleteObject(str(n)) for n in names]))
        assert not errors, errors
        client.remove_bucket(bucket)


@contextmanager
def private_job_topics(settings: IngestSettings, name: str) -> Iterator[tuple[str, str]]:
    """A private `video.uploaded` and `job.failed` pair (with DLQ twins) for one test module."""
    unique = uuid.uuid4().hex[:8]
    with (
        private_topic(settings, f"test.{name}.uploaded.{unique}") as uploaded,
        private_topic(settings, f"test.{name}.failed.{unique}") as failed,
    ):
        yield uploaded, failed


@asynccontextmanager
async def private_runtime(settings: IngestSettings) -> AsyncIterator[Runtime]:
    """A started ingest runtime over a private incoming bucket."""
    with private_bucket(settings):
        async with started_runtime(settings) as runtime:
            yield runtime


@asynccontextmanager
async def started_runtime(settings: IngestSettings) -> AsyncIterator[Runtime]:
    """A Runtime whose broker is started (for publishing), closed afterwards."""
    runtime = Runtime(settings, f"ingest-test-{uuid.uuid4().hex[:6]}")
    await runtime.broker.start()
    try:
        yield runtime
    finally:
        await runtime.broker.stop()
        await runtime.engine.dispose()


def starter_for(
    runtime: Runtime,
    settings: IngestSettings,
    uploaded: str,
    failed: str,
    *also: str,
    send: Send | None = None,
) -> JobStarter:
    """A JobStarter publishing to the given (private) topics, through an outbox that relays only the
    rows of those topics (and of `also`: the API's cancel topic) from the database every test shares.

    `send` replaces the runtime's broker (`BrokerAway`)."""
    outbox = Outbox(runtime.sessions, runtime.catalog, send or runtime.send, topics=[uploaded, failed, *also])
    return JobStarter(
        sessions=runtime.sessions,
        storage=runtime.storage,
        outbox=outbox,
        settings=settings,
        uploaded_topic=uploaded,
        failed_topic=failed,
    )


class BrokerAway:
    """An outbox's send that the broker refuses `refusals_left` times, then the runtime's real one."""

    def __init__(self, runtime: Runtime, refusals: int) -> None:
        self.runtime = runtime
        self.refusals_left = refusals

    async def __call__(self, value: bytes, topic: str, key: str | None) -> None:
        if self.refusals_left > 0:
            self.refusals_left -= 1
            raise KafkaException("broker transport failure (test)")
        await self.runtime.send(value, topic, key)


def records_keyed(settings: CommonSettings, topic: str, key: str) -> list[Any]:
    """Every record of `topic` (up to its current end) whose key is `key`; no waiting needed after acks."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        positions = {p: 0 for p in partitions}
        found = []
        deadline = time.monotonic() + 30
        while any(positions[p] < ends[p] for p in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            positions[message.partition()] = message.offset() + 1
            if message.key() == key.encode():
                found.append(message)
        return found
    finally:
        consumer.close()


def upload(
    runtime: Runtime, settings: IngestSettings, key: str, source: Path | bytes, metadata: dict[str, str]
) -> ObjectCreated:
    """Put an object in the incoming bucket; the ObjectCreated the bucket event would carry."""
    data = source if isinstance(source, bytes) else source.read_bytes()
    runtime.storage.put_object(
        settings.incoming_bucket,
        key,
        io.BytesIO(data),
        len(data),
        metadata=metadata,  # type: ignore[arg-type]
    )
    stat = runtime.storage.stat_object(settings.incoming_bucket, key)
    return object_record(
        bucket=settings.incoming_bucket,
        key=key,
        etag=str(stat.etag),
        size=len(data),
        metadata=user_metadata(stat.metadata or {}),
        version_id=stat.version_id,
    )


async def jobs_for(runtime: Runtime, bucket: str, key: str) -> list[Job]:
    """Every job row of an object key."""
    async with runtime.sessions() as session:
        rows = await session.execute(
            select(Job).where(col(Job.source_bucket) == bucket, col(Job.source_key) == key)
        )
        return list(rows.scalars().all())


class MinioEventTail:
    """Reads `minio.events` from its current end, to catch the event of one upload."""

    def __init__(self, settings: CommonSettings) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        topic = "minio.events"
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign(
            [
                TopicPartition(topic, p, self.consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
                for p in partitions
            ]
        )

    def wait_for(self, key: str, timeout_s: float = 20.0) -> tuple[bytes, ObjectCreated]:
        """The raw notification and parsed record of the event for `key`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is None or message.error():
                continue
            for record in parse_notification(message.value()):
                if isinstance(record, ObjectCreated) and record.key == key:
                    return bytes(message.value()), record
        raise AssertionError(f"no MinIO event for {key!r} within {timeout_s}s")

    def close(self) -> None:
        """Leave without committing."""
        self.consumer.close()


def api_client(
    runtime: Runtime, settings: IngestSettings, topics: tuple[str, str], **deps: Any
) -> httpx.AsyncClient:
    """An HTTP client of the ingest API over `runtime`, publishing to the private `topics`."""
    from services.ingest.api import ApiDeps, create_api, kafka_admin_check

    cancel_topic = [deps["cancelled_topic"]] if "cancelled_topic" in deps else []

    api = create_api(
        ApiDeps(
            settings=settings,
            sessions=runtime.sessions,
            storage=runtime.storage,
            starter=starter_for(runtime, settings, *topics, *cancel_topic, send=deps.get("send")),
            kafka_check=deps.get("kafka_check") or kafka_admin_check(settings.kafka_bootstrap),
            **({"cancelled_topic": deps["cancelled_topic"]} if "cancelled_topic" in deps else {}),
        )
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://ingest.test")
