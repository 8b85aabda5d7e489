"""Pipeline-wide gauges that no single consumer can see: jobs by status and consumer lag.

Ingest refreshes them in the background every few seconds (one `group by` query and a handful of
Kafka admin requests), so a scrape never waits on PostgreSQL or Kafka and the database sees one cheap
query per interval however many dashboards are open. Every ingest instance exports the same values:
aggregate with `max`, not `sum`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from infiniteflow_common.db import Job, JobStatus
from infiniteflow_common.observability import get_logger
from infiniteflow_common.topics import TopicSpec, topic_specs
from services.ingest import metrics

log = get_logger()
INTERVAL_S = 5.0
KAFKA_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition's log range and a group's committed position in it (None: never committed)."""

    low: int
    high: int
    committed: int | None


def lag_of(partitions: Iterable[PartitionOffsets]) -> int:
    """Messages a group has still to process: a partition never committed counts from its low mark."""
    return sum(max(0, p.high - (p.committed if p.committed is not None else p.low)) for p in partitions)


def status_counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Every status with its count, zeros included, so each series exists from the first scrape."""
    counts = {status.value: 0 for status in JobStatus}
    for status, count in rows:
        counts[status] = counts.get(status, 0) + int(count)
    return counts


class KafkaOffsets:
    """Watermarks and committed offsets through one confluent-kafka AdminClient (blocking; run in a thread)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})

    def partitions(self, topics: Iterable[str]) -> dict[str, list[int]]:
        """The partitions of each existing topic among `topics`."""
        metadata = self.admin.list_topics(timeout=KAFKA_TIMEOUT_S)
        return {
            name: sorted(meta.partitions)
            for name, meta in metadata.topics.items()
            if name in set(topics) and meta.error is None
        }

    def watermarks(self, partitions: Mapping[str, list[int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, high) of every partition."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        wanted = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        if not wanted:
            return {}
        ends: dict[str, dict[tuple[str, int], int]] = {}
        for name, spec in (("low", OffsetSpec.earliest()), ("high", OffsetSpec.latest())):
            futures = self.admin.list_offsets({tp: spec for tp in wanted}, request_timeout=KAFKA_TIMEOUT_S)
            ends[name] = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        return {key: (ends["low"][key], ends["high"][key]) for key in ends["high"]}

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets (partitions it never committed are absent)."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        future = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=KAFKA_TIMEOUT_S
        )
        result: Any = next(iter(future.values())).result()
        return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def consumer_lag(kafka: KafkaOffsets, specs: Mapping[str, TopicSpec]) -> dict[tuple[str, str], int]:
    """Lag per (consumer group, topic) for every consumer the topic manifests name, and DLQ depths."""
    topics = [*specs, *(spec.dlq for spec in specs.values())]
    partitions = kafka.partitions(topics)
    marks = kafka.watermarks(partitions)
    for topic in topics:
        metrics.TOPIC_MESSAGES.labels(topic).set(
            sum(high - low for (t, _), (low, high) in marks.items() if t == topic)
        )
    lags: dict[tuple[str, str], int] = {}
    groups = sorted({group for spec in specs.values() for group in spec.consumers})
    for group in groups:
        committed = kafka.committed(group)
        for spec in specs.values():
            if group not in spec.consumers or spec.name not in partitions:
                continue
            lags[(group, spec.name)] = lag_of(
                PartitionOffsets(*marks[(spec.name, p)], committed.get((spec.name, p)))
                for p in partitions[spec.name]
            )
    return lags


class PipelineMonitor:
    """Refreshes `infiniteflow_jobs` and `infiniteflow_consumer_lag` every `interval_s` seconds."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        kafka_bootstrap: str,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.sessions = sessions
        self.kafka_bootstrap = kafka_bootstrap
        self.interval_s = interval_s
        self._kafka: KafkaOffsets | None = None

    async def refresh_jobs(self) -> None:
        """One `select status, count(*) from jobs group by status`."""
        async with self.sessions() as session:
            rows = (
                await session.execute(select(col(Job.status), func.count()).group_by(col(Job.status)))
            ).all()
        for status, count in status_counts((str(r[0]), int(r[1])) for r in rows).items():
            metrics.JOBS.labels(status).set(count)

    def refresh_lag(self) -> None:
        """Blocking: watermarks and committed offsets of the pipeline's groups (call in a thread)."""
        if self._kafka is None:
            self._kafka = KafkaOffsets(self.kafka_bootstrap)
        for (group, topic), lag in consumer_lag(self._kafka, topic_specs()).items():
            metrics.CONSUMER_LAG.labels(group, topic).set(lag)

    async def run_forever(self) -> None:
        """Refresh until cancelled; a failed refresh is logged and retried at the next interval."""
        while True:
            for name, refresh in (
                ("jobs", self.refresh_jobs),
                ("lag", lambda: asyncio.to_thread(self.refresh_lag)),
            ):
                try:
                    await asyncio.wait_for(refresh(), timeout=self.interval_s * 4)
                except Exception as exc:
                    metrics.MONITOR_ERRORS.labels(name).inc()
                    log.warning("pipeline monitor refresh failed", part=name, error=repr(exc))
            await asyncio.sleep(self.interval_s)
