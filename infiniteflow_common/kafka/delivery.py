"""One Kafka record as a handler sees it (`Delivery`), and the job a pipeline record belongs to."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from confluent_kafka import Message
from faststream.confluent.message import KafkaMessage


@dataclass(frozen=True)
class Delivery:
    """One Kafka record as a handler sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    timestamp_ms: int | None = None

    @property
    def where(self) -> str:
        """Where the record sits, in the form operators search for: `topic[partition]@offset`."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


Handler = Callable[[Delivery], Awaitable[None]]


def record_of(message: KafkaMessage) -> Message:
    """The confluent-kafka record inside a faststream message (a batch subscriber wraps it in a tuple)."""
    raw = message.raw_message
    return raw[0] if isinstance(raw, tuple) else raw


def to_delivery(message: KafkaMessage) -> Delivery:
    """The handler's view of a faststream Kafka message."""
    record = record_of(message)
    headers = {
        k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
        for k, v in (record.headers() or [])
    }
    ts_type, ts = record.timestamp()
    key = record.key()
    return Delivery(
        topic=str(record.topic()),
        partition=int(record.partition() or 0),
        offset=int(record.offset() or 0),
        key=key if isinstance(key, bytes) or key is None else str(key).encode(),
        value=bytes(record.value() or b""),
        headers=headers,
        timestamp_ms=ts if ts_type else None,
    )


def job_id_from_key(key: bytes | None) -> str | None:
    """The job a pipeline record belongs to, from its key (job_id, or job_id/chunk_index); else None."""
    try:
        return str(uuid.UUID(key.decode().split("/", 1)[0])) if key else None
    except (ValueError, UnicodeDecodeError):
        return None
