"""The `webhooks` table, the notifier's outbox: one row per webhook message, the delivery loop's queue.

A row is written once, idempotently, when its job event arrives (then the Kafka offset is committed);
the delivery loop claims due rows with `FOR UPDATE SKIP LOCKED` so any number of notifier instances
share the work, records every attempt in `webhook_deliveries`, and finally dead-letters exhausted rows.
The origin record (topic, partition, offset, key, payload) is kept so that dead letter carries the
original event exactly as it arrived.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from infiniteflow_common.db import Job, WebhookDelivery, WebhookEndpoint, utcnow
from infiniteflow_common.domain import RequestedParams
from infiniteflow_common.events import JobParams
from infiniteflow_common.kafka import Delivery
from services.notifier.webhooks import Decision, Outcome, WebhookStatus


class Webhook(SQLModel, table=True):
    """One webhook message (migration 0002): its exact body, where it goes and how delivery stands."""

    __tablename__ = "webhooks"

    webhook_id: str = Field(sa_column=Column(Text, primary_key=True))
    job_id: uuid.UUID = Field(sa_column=Column(nullable=False, index=True))
    event_type: str = Field(sa_column=Column(String(32), nullable=False))
    url: str | None = Field(default=None, sa_column=Column(Text))
    body: str = Field(sa_column=Column(Text, nullable=False))
    origin_topic: str = Field(sa_column=Column(Text, nullable=False))
    origin_partition: int = Field(sa_column=Column(Integer, nullable=False))
    origin_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    origin_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    origin_payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    origin_headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    origin_timestamp_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    status: str = Field(default=WebhookStatus.PENDING.value, sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_status_code: int | None = Field(default=None, sa_column=Column(Integer))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    error_code: str | None = Field(default=None, sa_column=Column(String(64)))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    dead_lettered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))

    def origin(self) -> Delivery:
        """The Kafka record this webhook came from, as `publish_dead_letter` takes it."""
        return Delivery(
            topic=self.origin_topic,
            partition=self.origin_partition,
            offset=self.origin_offset,
            key=self.origin_key,
            value=self.origin_payload,
            headers=dict(self.origin_headers),
            timestamp_ms=self.origin_timestamp_ms,
        )


async def insert_webhook(
    session: AsyncSession,
    *,
    webhook_id: str,
    job_id: uuid.UUID,
    event_type: str,
    url: str | None,
    body: str,
    origin: Delivery,
    now: datetime,
) -> bool:
    """Store a webhook unless its id exists; returns whether this call created it.

    Without a `url` the row is stored as `skipped` (final, nothing sent) so the event still leaves a
    trace; with one it is `pending` and due at once.
    """
    status = WebhookStatus.PENDING if url else WebhookStatus.SKIPPED
    statement = (
        insert(Webhook)
        .values(
            webhook_id=webhook_id,
            job_id=job_id,
            event_type=event_type,
            url=url,
            body=body,
            origin_topic=origin.topic,
            origin_partition=origin.partition,
            origin_offset=origin.offset,
            origin_key=origin.key,
            origin_payload=origin.value,
            origin_headers=origin.headers,
            origin_timestamp_ms=origin.timestamp_ms,
            status=status.value,
            attempts=0,
            next_attempt_at=now if url else None,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["webhook_id"])
        .returning(col(Webhook.webhook_id))
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None


async def job_params(session: AsyncSession, job_id: uuid.UUID) -> JobParams | None:
    """The parameters recorded on the job row, when there is one and they are well-formed."""
    params: JobParams | RequestedParams | None = (
        await session.execute(select(col(Job.params)).where(col(Job.id) == job_id))
    ).scalar_one_or_none()
    return params if isinstance(params, JobParams) else None


async def claim_due(
    session: AsyncSession,
    *,
    now: datetime,
    limit: int,
    lease_s: float,
    only_jobs: Collection[uuid.UUID] | None = None,
) -> list[Webhook]:
    """Claim up to `limit` due pending webhooks for one attempt each (commit to release the locks).

    Each claimed row gets its attempt number (`attempts` + 1) and is pushed `lease_s` into the future,
    so other instances skip it while the attempt runs and pick it up again if this one dies mid-way.
    `only_jobs` restricts the claim to some jobs (re-driving chosen jobs; tests sharing a database).
    """
    statement = (
        select(Webhook)
        .where(col(Webhook.status) == WebhookStatus.PENDING.value)
        .where(col(Webhook.next_attempt_at) <= now)
        .order_by(col(Webhook.next_attempt_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if only_jobs is not None:
        statement = statement.where(col(Webhook.job_id).in_(list(only_jobs)))
    rows = list((await session.execute(statement)).scalars().all())
    for row in rows:
        row.attempts += 1
        row.next_attempt_at = now + timedelta(seconds=lease_s)
    await session.flush()
    return rows


@dataclass(frozen=True)
class AttemptRecord:
    """What one HTTP attempt observed."""

    status_code: int | None
    error: str | None
    latency_ms: float
    attempted_at: datetime


async def record_attempt(
    session: AsyncSession, webhook: Webhook, record: AttemptRecord, decision: Decision, *, now: datetime
) -> bool:
    """Log the attempt in `webhook_deliveries` and move the webhook on as `decision` says.

    The update is fenced on the attempt number this instance claimed: if its lease ran out and
    another instance claimed the row meanwhile, the attempt is still logged but the row is left to
    the newer claim. Returns whether the webhook row was updated.
    """
    await session.execute(
        insert(WebhookDelivery)
        .values(
            webhook_id=webhook.webhook_id,
            job_id=webhook.job_id,
            event_type=webhook.event_type,
            url=webhook.url or "",
            attempt=webhook.attempts,
            status_code=record.status_code,
            outcome=decision.outcome.value,
            error=record.error,
            latency_ms=record.latency_ms,
            attempted_at=record.attempted_at,
        )
        .on_conflict_do_nothing(constraint="uq_webhook_attempt")
    )
    values: dict[str, Any] = {"last_status_code": record.status_code, "last_error": record.error}
    if decision.outcome is Outcome.DELIVERED:
        values.update(status=WebhookStatus.DELIVERED.value, next_attempt_at=None, delivered_at=now)
    elif decision.outcome is Outcome.RETRY:
        values.update(next_attempt_at=now + timedelta(seconds=decision.retry_in_s or 0.0))
    else:
        values.update(
            status=WebhookStatus.EXHAUSTED.value, next_attempt_at=None, error_code=decision.error_code
        )
    result = await session.execute(
        update(Webhook)
        .where(col(Webhook.webhook_id) == webhook.webhook_id)
        .where(col(Webhook.attempts) == webhook.attempts)
        .where(col(Webhook.status) == WebhookStatus.PENDING.value)
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0))


async def claim_dead_letters(
    session: AsyncSession, *, limit: int, only_jobs: Collection[uuid.UUID] | None = None
) -> Sequence[Webhook]:
    """Exhausted webhooks whose dead letter is not published yet, locked until the session commits."""
    statement = (
        select(Webhook)
        .where(col(Webhook.status) == WebhookStatus.EXHAUSTED.value)
        .where(col(Webhook.dead_lettered_at).is_(None))
        .order_by(col(Webhook.created_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if only_jobs is not None:
        statement = statement.where(col(Webhook.job_id).in_(list(only_jobs)))
    return (await session.execute(statement)).scalars().all()


async def mark_dead_lettered(session: AsyncSession, webhook_id: str, *, now: datetime) -> None:
    """Remember that the dead letter of `webhook_id` is in its DLQ."""
    await session.execute(
        update(Webhook).where(col(Webhook.webhook_id) == webhook_id).values(dead_lettered_at=now)
    )


async def count_pending(session: AsyncSession) -> int:
    """Webhooks still to be delivered (due now or waiting for a retry)."""
    statement = (
        select(func.count()).select_from(Webhook).where(col(Webhook.status) == WebhookStatus.PENDING.value)
    )
    return int((await session.execute(statement)).scalar_one())


async def disable_endpoint(session: AsyncSession, url: str, *, job_id: uuid.UUID, now: datetime) -> None:
    """Stop sending to `url` (it answered 410 Gone); idempotent."""
    await session.execute(
        insert(WebhookEndpoint)
        .values(url=url, disabled_at=now, reason="410 Gone", job_id=job_id)
        .on_conflict_do_nothing(index_elements=["url"])
    )


async def endpoint_disabled_at(session: AsyncSession, url: str) -> datetime | None:
    """When `url` was disabled, or None while it is enabled."""
    endpoint = await session.get(WebhookEndpoint, url)
    return endpoint.disabled_at if endpoint is not None else None


async def enable_endpoint(session: AsyncSession, url: str) -> bool:
    """Allow `url` again (an operator's decision); False when it was not disabled."""
    result = await session.execute(delete(WebhookEndpoint).where(col(WebhookEndpoint.url) == url))
    return bool(getattr(result, "rowcount", 0))
