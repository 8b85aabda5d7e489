"""In-memory stand-ins for what a `ReliableConsumer` talks to: a faststream message and the broker."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.kafka import Delivery, PermanentFailure, ReliableConsumer
from infiniteflow_common.settings import CommonSettings

Reported = list[tuple[Delivery, InvalidMessage]]


@dataclass
class Record:
    """A confluent-kafka record (the methods `to_delivery` and `commit` call)."""

    topic_: str
    offset_: int
    value_: bytes
    key_: bytes | None = b"k"
    partition_: int = 0

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


@dataclass
class Client:
    """The confluent Consumer: keeps the offsets it was asked to commit."""

    committed: list[int] = field(default_factory=list)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.committed.extend(o.offset for o in offsets)


@dataclass
class Message:
    """A faststream `KafkaMessage`: its record, its consumer, and whether it was nacked (seek back)."""

    raw_message: Record
    consumer: Any
    committed: Any = None
    nacks: int = 0

    async def nack(self) -> None:
        self.nacks += 1


@dataclass
class Broker:
    """The producer side: what was published, by topic."""

    published: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    async def publish(self, value: bytes, *, topic: str, key: bytes | None, headers: dict[str, str]) -> None:
        self.published.append((topic, value, headers))


@dataclass
class Member:
    """`message.consumer`: faststream's wrapper whose `.consumer` is the confluent client."""

    consumer: Client = field(default_factory=Client)


def message(topic: str, offset: int, value: bytes, member: Member, key: bytes | None = b"k") -> Any:
    """A message at `topic[0]@offset` read by `member`."""
    return Message(raw_message=Record(topic, offset, value, key), consumer=member)


def reliable_consumer(
    handler: Any,
    broker: Broker,
    reported: Reported,
    *,
    topic: str,
    permanent_failure: PermanentFailure,
    retry_max_attempts: int,
    service: str = "test",
) -> ReliableConsumer:
    """A consumer on `broker` with near-instant retries; what it dead-letters is reported to `reported`."""

    async def report(delivery: Delivery, error: InvalidMessage) -> None:
        reported.append((delivery, error))

    return ReliableConsumer(
        broker=broker,  # type: ignore[arg-type]
        catalog=SchemaCatalog.load(),
        service=service,
        topic=topic,
        handler=handler,
        settings=CommonSettings(
            retry_max_attempts=retry_max_attempts, retry_base_delay_s=0.001, retry_max_delay_s=0.001
        ),
        permanent_failure=permanent_failure,
        on_dead_letter=report,
        rng=random.Random(0),
    )
