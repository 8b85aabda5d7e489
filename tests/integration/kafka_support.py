"""Helpers for tests that talk to the real Kafka broker: private topics, produce, read, offsets."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.kafka import Delivery, ReliableConsumer, make_broker, subscribe
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import permanent_storage_failure
from infiniteflow_common.topics import dlq_of
from tests.support.waiting import eventually_sync


@contextmanager
def private_topic(settings: CommonSettings, name: str, partitions: int = 1) -> Iterator[str]:
    """Create `name` and its DLQ twin for one test, delete both afterwards."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = [name, dlq_of(name)]
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
    ).values():
        future.result(timeout=30)
    eventually_sync(
        lambda: all(t in admin.list_topics(timeout=10).topics for t in topics), 30, "the topics to appear"
    )
    try:
        yield name
    finally:
        for future in admin.delete_topics(topics).values():
            with contextlib.suppress(KafkaException):  # already gone is fine
                future.result(timeout=30)


def produce(settings: CommonSettings, topic: str, values: list[bytes], key: bytes | None = b"k") -> None:
    """Produce `values` in order with acks=all and wait for every delivery."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0, "not every message was delivered"


def read_all(settings: CommonSettings, topic: str, expected: int, timeout_s: float = 20.0) -> list[Any]:
    """Read `expected` records of `topic` from the beginning (no group commits)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                records.append(message)
    finally:
        consumer.close()
    return records


def committed_offset(settings: CommonSettings, topic: str, group: str, partition: int = 0) -> int:
    """The group's committed offset on one partition (-1001 when none)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


@asynccontextmanager
async def running_consumer(
    settings: CommonSettings,
    topic: str,
    handler: Callable[..., Awaitable[None]],
    *,
    group: str,
    service: str = "test",
    catalog: SchemaCatalog | None = None,
    on_dead_letter: Callable[[Delivery, InvalidMessage], Awaitable[None]] | None = None,
) -> AsyncIterator[ReliableConsumer]:
    """Run a ReliableConsumer on the real broker for the duration of the block."""
    broker = make_broker(settings, service)
    consumer = ReliableConsumer(
        broker=broker,
        catalog=catalog or SchemaCatalog.load(),
        service=service,
        topic=topic,
        handler=handler,
        settings=settings,
        # as the services' composition root (`Runtime.consume`) decides
        permanent_failure=permanent_storage_failure,
        on_dead_letter=on_dead_letter,
    )
    subscribe(broker, consumer, group_id=group)
    await broker.start()
    try:
        yield consumer
    finally:
        await broker.stop()
