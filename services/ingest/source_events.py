"""Handling of `minio.events`: MinIO notifications in, one `start_job` call per new object out.

Bad input never stops the consumer: malformed JSON is dead-lettered (via `InvalidMessage`), while test
events, deletions and objects of other buckets are skipped, logged and counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from infiniteflow_common.kafka import Delivery
from infiniteflow_common.metrics import BAD_SOURCE_EVENTS
from infiniteflow_common.minio_events import Ignored, ObjectCreated, parse_notification
from infiniteflow_common.observability import get_logger

log = get_logger()

StartJob = Callable[[ObjectCreated], Awaitable[None]]


class SourceEventHandler:
    """Turns each s3:ObjectCreated record of the incoming bucket into a `start_job` call."""

    def __init__(self, *, incoming_bucket: str, start_job: StartJob) -> None:
        self.incoming_bucket = incoming_bucket
        self.start_job = start_job

    async def __call__(self, delivery: Delivery) -> None:
        """Handle one notification (which may carry several records)."""
        try:
            records = parse_notification(delivery.value)
        except Exception:
            BAD_SOURCE_EVENTS.labels("malformed").inc()
            raise
        for record in records:
            if isinstance(record, Ignored):
                BAD_SOURCE_EVENTS.labels(record.reason).inc()
                log.info("source event ignored", where=delivery.where, reason=record.reason)
            elif record.bucket != self.incoming_bucket:
                BAD_SOURCE_EVENTS.labels("other_bucket").inc()
                log.warning(
                    "source event for another bucket ignored", where=delivery.where, bucket=record.bucket
                )
            else:
                await self.start_job(record)
