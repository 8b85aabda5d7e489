"""Pipeline-wide gauges that no single consumer can see: jobs by status, queues per tenant, consumer lag.

They describe the whole pipeline, not ingest's own work; ingest only hosts them. It refreshes them in the
background every few seconds (one `group by` query, a handful of Kafka offset requests and the queue
snapshot of `infiniteflow_common.queue`), so a scrape never waits on PostgreSQL or Kafka and the
database sees one cheap query per interval however many dashboards are open. Every ingest instance exports the same values:
aggregate with `max`, not `sum`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.domain import JobStatus
from infiniteflow_common.jobs import count_by_status
from infiniteflow_common.observability import get_logger
from infiniteflow_common.queue import read_loads, tenant_ids, tenant_loads
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


MONITOR_GROUP = "infiniteflow-monitor"
"""Group id of the reader of watermarks and metadata (it never subscribes, so never joins)."""


class KafkaOffsets:
    """Watermarks and committed offsets through plain consumers (blocking; run in a thread).

    Not the AdminClient: its offset requests (list_offsets, list_consumer_group_offsets) crashed the
    process inside librdkafka while the broker was restarting (`rd_kafka_enq_once_del_source_return:
    Assertion eonce->refcnt > 0 failed`). A consumer that never subscribes reads a group's committed
    offsets without joining the group.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._readers: dict[str, Any] = {}

    def _reader(self, group: str) -> Any:
        from confluent_kafka import Consumer

        if group not in self._readers:
            self._readers[group] = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": group,
                    "enable.auto.commit": False,
                    "socket.timeout.ms": 5000,
                    "client.id": "infiniteflow-monitor",
                }
            )
        return self._readers[group]

    def partitions(self, topics: Iterable[str]) -> dict[str, list[int]]:
        """The partitions of each existing topic among `topics`."""
        metadata = self._reader(MONITOR_GROUP).list_topics(timeout=KAFKA_TIMEOUT_S)
        return {
            name: sorted(meta.partitions)
            for name, meta in metadata.topics.items()
            if name in set(topics) and meta.error is None
        }

    def watermarks(self, partitions: Mapping[str, list[int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, high) of every partition."""
        from confluent_kafka import TopicPartition

        reader = self._reader(MONITOR_GROUP)
        return {
            (topic, p): tuple(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=KAFKA_TIMEOUT_S))
            for topic, ps in partitions.items()
            for p in ps
        }

    def committed(self, group: str, partitions: Mapping[str, list[int]]) -> dict[tuple[str, int], int]:
        """The group's committed offsets on `partitions` (ones it never committed are absent)."""
        from confluent_kafka import TopicPartition

        wanted = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        if not wanted:
            return {}
        found = self._reader(group).committed(wanted, timeout=KAFKA_TIMEOUT_S)
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def close(self) -> None:
        """Close every reader."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


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
        mine = {
            spec.name: partitions[spec.name]
            for spec in specs.values()
            if group in spec.consumers and spec.name in partitions
        }
        committed = kafka.committed(group, mine)
        for spec in specs.values():
            if group not in spec.consumers or spec.name not in partitions:
                continue
            lags[(group, spec.name)] = lag_of(
                PartitionOffsets(*marks[(spec.name, p)], committed.get((spec.name, p)))
                for p in partitions[spec.name]
            )
    return lags


class PipelineMonitor:
    """Refreshes the jobs, per-tenant queue and consumer lag gauges every `interval_s` seconds."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        kafka_bootstrap: str,
        interval_s: float = INTERVAL_S,
        engine_mpix_per_s: Mapping[str, float] | None = None,
    ) -> None:
        self.sessions = sessions
        self.kafka_bootstrap = kafka_bootstrap
        self.interval_s = interval_s
        self.engine_mpix_per_s = dict(engine_mpix_per_s or {})
        self._kafka: KafkaOffsets | None = None
        self._tenants: set[str] = set()

    async def refresh_jobs(self) -> None:
        """One `select status, count(*) from jobs group by status`."""
        async with self.sessions() as session:
            rows = await count_by_status(session)
        for status, count in status_counts(rows).items():
            metrics.JOBS.labels(status).set(count)

    async def refresh_queues(self) -> None:
        """Chunks waiting and running, and the waiting work, per tenant; a deleted tenant's series go."""
        async with self.sessions() as session:
            snapshot = await read_loads(session, self.engine_mpix_per_s)
            tenants = await tenant_ids(session)
        loads = tenant_loads(snapshot.jobs, tenants)
        for tenant, load in loads.items():
            metrics.TENANT_QUEUED_CHUNKS.labels(tenant).set(load.waiting)
            metrics.TENANT_QUEUED_WORK.labels(tenant).set(load.waiting_s)
            metrics.TENANT_RUNNING_CHUNKS.labels(tenant).set(load.running)
        for gone in self._tenants - loads.keys():
            for gauge in (
                metrics.TENANT_QUEUED_CHUNKS,
                metrics.TENANT_QUEUED_WORK,
                metrics.TENANT_RUNNING_CHUNKS,
            ):
                gauge.remove(gone)
        self._tenants = set(loads)

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
                ("queues", self.refresh_queues),
                ("lag", lambda: asyncio.to_thread(self.refresh_lag)),
            ):
                try:
                    await asyncio.wait_for(refresh(), timeout=self.interval_s * 4)
                except Exception as exc:
                    metrics.MONITOR_ERRORS.labels(name).inc()
                    log.warning("pipeline monitor refresh failed", part=name, error=repr(exc))
            await asyncio.sleep(self.interval_s)
