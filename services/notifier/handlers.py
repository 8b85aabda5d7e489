"""Kafka side of the notifier: a job.completed / job.failed / job.cancelled event in, one webhook row out.

Nothing is sent from here. The handler stores the message (idempotently, keyed by the webhook id) and
returns, so the consumer commits the offset only once the row is durable; the delivery loop sends it
from the table, which survives restarts and does not hold the consumer while a receiver is slow.
A payload that is not a valid event raises `InvalidMessage` (→ DLQ); a database failure propagates and
is retried by the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import transaction, utcnow
from infiniteflow_common.events import JobCancelled, JobCompleted, JobFailed, JobParams, decode_event
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.observability import get_logger
from services.notifier import metrics
from services.notifier.store import insert_webhook, job_params
from services.notifier.webhooks import (
    EventType,
    cancelled_data,
    completed_data,
    encode_body,
    failed_data,
    webhook_id,
)

log = get_logger()

Presign = Callable[[str, str, timedelta], str]
"""(bucket, key, validity) → a presigned GET URL of that object."""


class JobEventHandler:
    """Stores the webhook of each job event of one type; register one per topic."""

    def __init__(
        self,
        *,
        event_type: EventType,
        catalog: SchemaCatalog,
        sessions: async_sessionmaker[AsyncSession],
        presign: Presign,
        output_url_ttl: timedelta,
        on_stored: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.event_type = event_type
        self.catalog = catalog
        self.sessions = sessions
        self.presign = presign
        self.output_url_ttl = output_url_ttl
        self.on_stored = on_stored
        self.clock = clock

    async def __call__(self, delivery: Delivery) -> None:
        """Store the webhook of the event in `delivery` (a replay stores nothing new)."""
        event: JobCompleted | JobFailed | JobCancelled
        if self.event_type is EventType.JOB_COMPLETED:
            event = decode_event(self.catalog, delivery.value, JobCompleted)
        elif self.event_type is EventType.JOB_CANCELLED:
            event = decode_event(self.catalog, delivery.value, JobCancelled)
        else:
            event = decode_event(self.catalog, delivery.value, JobFailed)
        bound = log.bind(job_id=str(event.job_id), event_type=self.event_type.value, where=delivery.where)
        msg_id = webhook_id(event.job_id, self.event_type)
        now = self.clock()
        async with transaction(self.sessions) as session:
            url: str | None
            if isinstance(event, JobCompleted):
                params: JobParams | None = event.params
                body = await self._completed_body(event, now)
                url = params.webhook_url if params is not None else None
            elif isinstance(event, JobCancelled):
                params = await job_params(session, event.job_id)
                body = encode_body(self.event_type, event.cancelled_at, cancelled_data(event, params=params))
                url = event.webhook_url
            else:
                # A job that failed early may not carry its parameters; the job row then knows the URL.
                params = event.params or await job_params(session, event.job_id)
                body = encode_body(self.event_type, event.failed_at, failed_data(event, params=params))
                url = params.webhook_url if params is not None else None
            created = await insert_webhook(
                session,
                webhook_id=msg_id,
                job_id=event.job_id,
                event_type=self.event_type.value,
                url=url or None,
                body=body,
                origin=delivery,
                now=now,
            )
        status = "duplicate" if not created else ("pending" if url else "skipped")
        metrics.WEBHOOKS_STORED.labels(self.event_type.value, status).inc()
        bound.info("webhook stored", webhook_id=msg_id, status=status)
        if created and url and self.on_stored is not None:
            self.on_stored()

    async def _completed_body(self, event: JobCompleted, now: datetime) -> str:
        # minio presigns locally when the client knows its region; a thread keeps the loop free otherwise.
        url = await asyncio.to_thread(
            self.presign, event.output_bucket, event.output_key, self.output_url_ttl
        )
        data = completed_data(event, output_url=url, output_url_expires_at=now + self.output_url_ttl)
        return encode_body(self.event_type, event.completed_at, data)
