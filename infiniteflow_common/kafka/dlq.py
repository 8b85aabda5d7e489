"""The dead-letter queue: the `DeadLetter` envelope and its headers, and the breaker that guards it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from faststream.confluent import KafkaBroker

from infiniteflow_common import metrics
from infiniteflow_common.kafka.delivery import Delivery, job_id_from_key
from infiniteflow_common.topics import dlq_of

if TYPE_CHECKING:
    from infiniteflow_common.avro import SchemaCatalog

# Headers put on every dead letter so an operator can find the original without decoding the envelope.
H_ORIGIN_TOPIC = "x-origin-topic"
H_ORIGIN_PARTITION = "x-origin-partition"
H_ORIGIN_OFFSET = "x-origin-offset"
H_ERROR_CODE = "x-error-code"
H_ERROR_REASON = "x-error-reason"
H_SERVICE = "x-service"


async def publish_dead_letter(
    broker: KafkaBroker,
    catalog: SchemaCatalog,
    delivery: Delivery,
    *,
    service: str,
    code: str,
    reason: str,
    attempts: int,
    job_id: str | None = None,
) -> None:
    """Publish the `DeadLetter` envelope of `delivery` to its topic's DLQ and wait for acks=all."""
    envelope = {
        "origin_topic": delivery.topic,
        "origin_partition": delivery.partition,
        "origin_offset": delivery.offset,
        "origin_timestamp": (
            datetime.fromtimestamp(delivery.timestamp_ms / 1000, UTC) if delivery.timestamp_ms else None
        ),
        "key": delivery.key,
        "payload": delivery.value,
        "headers": delivery.headers,
        "error_code": code,
        "reason": reason,
        "service": service,
        "attempts": attempts,
        "failed_at": datetime.now(UTC),
        "job_id": job_id or job_id_from_key(delivery.key),
    }
    headers = {
        H_ORIGIN_TOPIC: delivery.topic,
        H_ORIGIN_PARTITION: str(delivery.partition),
        H_ORIGIN_OFFSET: str(delivery.offset),
        H_ERROR_CODE: code,
        H_ERROR_REASON: reason[:1000],
        H_SERVICE: service,
    }
    await broker.publish(
        catalog.encode("DeadLetter", envelope),
        topic=dlq_of(delivery.topic),
        key=delivery.key,
        headers=headers,
    )
    metrics.DLQ_MESSAGES.labels(service, delivery.topic, code).inc()


@dataclass
class DlqCircuitBreaker:
    """Trips when more than `max_invalid_ratio` of the last `window` messages were invalid."""

    max_invalid_ratio: float
    window: int
    min_messages: int
    _outcomes: deque[bool] = field(default_factory=deque)

    def record(self, invalid: bool) -> bool:
        """Record an outcome; True when the breaker is now open (the consumer must stop)."""
        self._outcomes.append(invalid)
        while len(self._outcomes) > self.window:
            self._outcomes.popleft()
        if len(self._outcomes) < self.min_messages:
            return False
        return sum(self._outcomes) / len(self._outcomes) > self.max_invalid_ratio
