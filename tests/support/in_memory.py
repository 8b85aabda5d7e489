"""Handlers without servers: a `Publish` that goes through the Avro contract, a record as the consumer
hands it over, and what faststream's `TestKafkaBroker` needs to run our manual-commit consumers.

`schema_catalog` and `publish` are fixtures (registered in tests/conftest.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from confluent_kafka import TopicPartition
from faststream.confluent import KafkaBroker
from faststream.confluent import KafkaMessage as KafkaMessageParam
from faststream.confluent.parser import AsyncConfluentParser
from faststream.middlewares import AckPolicy

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.events import DeadLetter, Event, decode_event, encode_event
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.topics import dlq_of

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Published:
    """One event as a consumer of `topic` reads it back: decoded from the bytes that were published."""

    topic: str
    event: Event
    key: str | None
    partition: int | None
    payload: bytes


class InMemoryPublish:
    """A `deps.Publish` that keeps what it is given instead of sending it.

    Each event is encoded with the newest schema (as `Runtime.publish` does) and decoded back, so an
    event the Avro contract cannot carry fails where it is published, and tests compare what a consumer
    would read. `key` is kept as given: None means the wire key is the event's job_id.
    """

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog
        self.published: list[Published] = []

    async def __call__(
        self, topic: str, event: Event, *, key: str | None = None, partition: int | None = None
    ) -> None:
        payload = encode_event(self.catalog, event)
        read_back = decode_event(self.catalog, payload, type(event))
        self.published.append(Published(str(topic), read_back, key, partition, payload))

    def on(self, topic: str) -> list[Event]:
        """The events published to `topic`, in order."""
        return [p.event for p in self.published if p.topic == topic]


@pytest.fixture(scope="session")
def schema_catalog() -> SchemaCatalog:
    """Every schema version in `schemas/avro`, parsed once."""
    return SchemaCatalog.load()


@pytest.fixture
def publish(schema_catalog: SchemaCatalog) -> InMemoryPublish:
    """A fresh in-memory `Publish`."""
    return InMemoryPublish(schema_catalog)


def delivery_of(
    catalog: SchemaCatalog,
    event: Event,
    *,
    topic: str,
    key: str | None = None,
    partition: int = 0,
    offset: int = 0,
) -> Delivery:
    """`event` as a handler receives it from `topic`, keyed like `Runtime.publish` keys it (its job_id)."""
    job_id = getattr(event, "job_id", None)
    wire_key = key or (str(job_id) if job_id else None)
    return Delivery(
        topic=str(topic),
        partition=partition,
        offset=offset,
        key=wire_key.encode() if wire_key else None,
        value=encode_event(catalog, event),
        headers={},
    )


@dataclass
class CommittingClient:
    """The confluent `Consumer` our commits go to (`offsets.send_commit`): keeps what it was asked."""

    committed: list[tuple[str, int, int]] = field(default_factory=list)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.committed.extend((o.topic, o.partition, o.offset) for o in offsets)


@dataclass
class GroupMember:
    """`message.consumer` of a manual-ack subscriber: faststream's consumer wrapping the confluent client.

    Under `TestKafkaBroker` no subscriber starts, so faststream's parser keeps its placeholder
    (`faststream.confluent.message.FAKE_CONSUMER`), which has no `.consumer`: `offsets.commit` would
    raise `AttributeError: 'FakeConsumer' object has no attribute 'consumer'` after every handled record.
    """

    consumer: CommittingClient = field(default_factory=CommittingClient)
    sought: list[tuple[str, int, int]] = field(default_factory=list)

    async def commit(self) -> None:
        raise AssertionError("our consumers commit through the confluent client, never through ack()")

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        self.sought.append((topic, partition, offset))

    @property
    def committed(self) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) of every commit, in order."""
        return self.consumer.committed


def join_in_memory(broker: KafkaBroker) -> GroupMember:
    """Give every subscriber of `broker` one group member that records commits and seeks.

    Call it after the consumers subscribed and before `TestKafkaBroker` starts. It does what a
    subscriber's own `start()` does with its real consumer (`parser._setup`), the one step the test
    broker skips.
    """
    member = GroupMember()
    for subscriber in broker.subscribers:
        parser = getattr(subscriber, "parser", None)
        if isinstance(parser, AsyncConfluentParser):
            parser._setup(member)
    return member


@dataclass(frozen=True)
class DeadLettered:
    """A record on a DLQ topic: the envelope decoded and the headers operators search by."""

    envelope: DeadLetter
    headers: dict[str, str]


def watch_dead_letters(broker: KafkaBroker, catalog: SchemaCatalog, topic: str) -> list[DeadLettered]:
    """Subscribe to `topic`'s DLQ on `broker` (before it starts); the list fills as dead letters arrive."""
    arrived: list[DeadLettered] = []

    async def keep(message: KafkaMessageParam) -> None:
        headers: dict[str, Any] = dict(message.headers)
        arrived.append(
            DeadLettered(
                decode_event(catalog, message.body, DeadLetter),
                {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in headers.items()},
            )
        )

    broker.subscriber(dlq_of(topic), group_id="dlq-watcher", ack_policy=AckPolicy.ACK_FIRST)(keep)
    return arrived
