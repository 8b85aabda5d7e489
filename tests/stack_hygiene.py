"""A test session against the real stack owns it for its duration and leaves it as it found it.

Before the first test that needs a server, the background services (`make demo`, `infiniteflow services
up`) are stopped: they would share port 8000, the consumer groups and the `incoming` bucket's events with
the services the tests start, and consume the tests' messages. `make demo` (or `infiniteflow services
up`) starts them again. The services' consumer groups then move to the end of their topics, so the
services the tests start do not replay what an earlier run left unconsumed.

After the last test, what the session made is removed: job rows created since it began (their chunks
and webhooks with them), tenants and keys, disabled webhook endpoints, Kafka outbox rows, objects
written to the shared buckets, buckets the tests created, and the Prometheus targets of the processes
they started; and the services' consumer groups move past whatever the tests left unconsumed on the
pipeline's topics (a killed service's last records), so the demo's services neither replay test jobs
nor show their lag. The demo, the web page and Grafana then show what they showed before. The session
holds the stack lock (`flock /tmp/infiniteflow-stack.lock`, `make test` takes it), so nothing else
writes meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from minio import Minio
from minio.deleteobjects import DeleteObject

from infiniteflow_common.runtime import sweep_stale_targets
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from infiniteflow_common.topics import topic_specs

STACK_MARKERS = frozenset({"kafka", "minio", "postgres"})


@dataclass(frozen=True)
class Snapshot:
    """What existed when the session began."""

    started_at: datetime
    """PostgreSQL's clock at the start (the rows' timestamps come from the same clock or later)."""
    buckets: frozenset[str]


@dataclass(frozen=True)
class Cleaned:
    """What `restore` removed, for the session's summary line."""

    jobs: int
    skipped_messages: int
    tenants: int
    endpoints: int
    objects: int
    buckets: list[str]
    targets: int

    def __str__(self) -> str:
        return (
            f"removed {self.jobs} job rows, {self.tenants} tenants, {self.endpoints} disabled webhook "
            f"endpoints, {self.objects} objects, buckets {self.buckets or 'none'}, "
            f"{self.targets} stale Prometheus targets; skipped {self.skipped_messages} unconsumed records"
        )


def _dsn(settings: CommonSettings) -> str:
    return settings.database_url.get_secret_value().replace("+asyncpg", "")


def stop_background_services() -> list[str]:
    """Stop what `make demo` / `infiniteflow services up` left running; returns their names."""
    from services.supervisor import stop_all

    return stop_all()


def take_snapshot(settings: CommonSettings) -> Snapshot:
    """The database clock and the bucket list now."""

    async def now() -> datetime:
        connection = await asyncpg.connect(_dsn(settings))
        try:
            value: datetime = await connection.fetchval("select now()")
            return value
        finally:
            await connection.close()

    buckets = frozenset(b.name for b in make_client(settings).list_buckets())
    return Snapshot(started_at=asyncio.run(now()), buckets=buckets)


async def _delete_rows(settings: CommonSettings, since: datetime) -> tuple[int, int, int]:
    connection = await asyncpg.connect(_dsn(settings))
    try:
        async with connection.transaction():
            jobs = await connection.fetch("select id from jobs where created_at >= $1", since)
            ids = [r["id"] for r in jobs]
            await connection.execute(
                "delete from webhook_deliveries where job_id = any($1) or attempted_at >= $2", ids, since
            )
            await connection.execute(
                "delete from webhooks where job_id = any($1) or created_at >= $2", ids, since
            )
            await connection.execute("delete from jobs where id = any($1)", ids)  # chunks cascade
            # events the tests staged and left (a broker they made refuse, a private topic since deleted)
            await connection.execute(
                "delete from kafka_outbox where job_id = any($1) or created_at >= $2", ids, since
            )
            tenants = await connection.fetch("select id from tenants where created_at >= $1", since)
            tenant_ids = [r["id"] for r in tenants]
            await connection.execute("delete from api_keys where tenant_id = any($1)", tenant_ids)
            await connection.execute("delete from rate_windows where tenant_id = any($1)", tenant_ids)
            await connection.execute("delete from tenants where id = any($1)", tenant_ids)
            endpoints = await connection.execute(
                "delete from webhook_endpoints where disabled_at >= $1", since
            )
        return len(ids), len(tenant_ids), int(endpoints.split()[-1])
    finally:
        await connection.close()


def _empty(client: Minio, bucket: str, since: datetime | None) -> int:
    """Delete the objects of `bucket` (only those written since `since`, when given); returns how many."""
    names = [
        str(o.object_name)
        for o in client.list_objects(bucket, recursive=True)
        if since is None or (o.last_modified is not None and o.last_modified >= since.replace(microsecond=0))
    ]
    errors = list(client.remove_objects(bucket, [DeleteObject(n) for n in names]))
    if errors:
        raise RuntimeError(f"could not delete test objects in {bucket}: {errors[:3]}")
    return len(names)


def skip_leftover_messages(settings: CommonSettings) -> int:
    """Commit every service group at the end of the topics it consumes; returns the records skipped.

    Only while the groups have no members (the services are stopped), which is when a session ends.
    """
    skipped = 0
    specs = topic_specs()
    for group in sorted({g for spec in specs.values() for g in spec.consumers}):
        consumer = Consumer(
            {"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            topics = [spec.name for spec in specs.values() if group in spec.consumers]
            metadata = consumer.list_topics(timeout=10).topics
            partitions = [
                TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions
            ]
            ends = []
            for committed in consumer.committed(partitions, timeout=10):
                low, high = consumer.get_watermark_offsets(committed, timeout=10)
                start = committed.offset if committed.offset >= 0 else low
                skipped += max(0, high - start)
                ends.append(TopicPartition(committed.topic, committed.partition, high))
            if ends:
                consumer.commit(offsets=ends, asynchronous=False)
        except KafkaException as exc:  # the group has members: someone runs services; leave it be
            print(f"consumer group {group} not moved past the test records: {exc}")
        finally:
            consumer.close()
    return skipped


def restore(settings: CommonSettings, snapshot: Snapshot) -> Cleaned:
    """Remove what the session made since `snapshot` (see the module docstring)."""
    jobs, tenants, endpoints = asyncio.run(_delete_rows(settings, snapshot.started_at))
    skipped = skip_leftover_messages(settings)
    client = make_client(settings)
    objects = 0
    created: list[str] = []
    for bucket in client.list_buckets():
        if bucket.name in snapshot.buckets:
            objects += _empty(client, bucket.name, snapshot.started_at)
        else:
            objects += _empty(client, bucket.name, None)
            client.remove_bucket(bucket.name)
            created.append(bucket.name)
    targets = 0
    if settings.prometheus_targets_dir is not None:
        targets = len(sweep_stale_targets(settings.prometheus_targets_dir))
    return Cleaned(jobs, skipped, tenants, endpoints, objects, created, targets)
