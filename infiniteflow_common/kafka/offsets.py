"""Committing offsets after durable work: fire-and-forget commits, made again after a rebalance."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from faststream.confluent.message import KafkaMessage

from infiniteflow_common.kafka.delivery import record_of
from infiniteflow_common.observability import get_logger

log = get_logger()

# Commit errors that mean "this member no longer owns the partition", not "the broker is broken".
REBALANCE_ERRORS = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}


class ProcessedOffsets:
    """The next offset to read on each partition this group member has finished records of.

    A commit is fire-and-forget (see `commit`), and we saw one lost: a worker committed a record while
    the group was rebalancing around a killed member, kept the partition (cooperative-sticky), and no
    later record came to commit past it, so the record stayed uncommitted for good. After every
    rebalance the member therefore commits again what it has processed on the partitions it still owns;
    partitions it gives up are forgotten first, so it never commits over a new owner's progress.
    Fed from the event loop; the rebalance callbacks run on the consumer's polling thread.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def record(self, topic: str, partition: int, next_offset: int) -> None:
        """`next_offset` is where a reader of this partition resumes after our finished records."""
        with self._lock:
            key = (topic, partition)
            self._next[key] = max(next_offset, self._next.get(key, next_offset))

    def forget(self, partitions: Iterable[Any]) -> None:
        """These partitions left this member (revoked or lost): their offsets are someone else's now."""
        with self._lock:
            for p in partitions:
                self._next.pop((p.topic, p.partition), None)

    def commit_again(self, client: Any) -> None:
        """Commit, asynchronously, what this member processed on the partitions it still owns."""
        with self._lock:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._next.items())]
        if not offsets:
            return
        try:
            send_commit(client, offsets)
        except (KafkaException, RuntimeError) as exc:  # nothing to commit, the client closing, …
            log.info("offsets not committed again after the rebalance", error=str(exc))
            return
        log.info(
            "processed offsets committed again after a rebalance",
            offsets=[f"{o.topic}[{o.partition}]@{o.offset}" for o in offsets],
        )


def send_commit(client: Any, offsets: list[TopicPartition]) -> None:
    """Ask librdkafka to commit `offsets` (next offsets to read) without waiting for the answer."""
    client.commit(offsets=offsets, asynchronous=True)


async def commit(message: KafkaMessage, processed: ProcessedOffsets | None = None) -> None:
    """Commit the offset after this message, without waiting for the broker's answer.

    Never a synchronous commit: librdkafka waits for its result without a timeout, and one issued
    while the broker restarted never returned — the consumer's only thread stayed blocked, so the
    service stopped consuming for good. The handler's output is already durable and every handler is
    idempotent, so a commit that fails (the broker gone, the partition moved) only means the record is
    read once more; one the broker refused while the partition stayed here is made again after the
    rebalance (`ProcessedOffsets`).
    """
    record = record_of(message)
    client = message.consumer.consumer  # type: ignore[attr-defined]  # the confluent Consumer
    topic, partition, offset = str(record.topic()), int(record.partition() or 0), int(record.offset() or 0)
    try:
        send_commit(client, [TopicPartition(topic, partition, offset + 1)])
    except KafkaException as exc:
        code = exc.args[0].code() if exc.args and hasattr(exc.args[0], "code") else None
        if code == KafkaError._NO_OFFSET:
            return
        if code not in REBALANCE_ERRORS:
            raise
        # The partition moved to another member while we worked (we were too slow or stopped). Its new
        # owner re-reads this record; the handlers' idempotency makes that harmless.
        log.warning("commit lost to a rebalance", error=str(exc))
    else:
        if processed is not None:
            processed.record(topic, partition, offset + 1)
    message.committed = message.committed or True  # type: ignore[assignment]
