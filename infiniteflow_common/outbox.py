"""The Kafka outbox: an event is written in the transaction that decides it and published after commit.

Publishing inside a transaction leaves one of two windows: publish then commit, and a failed commit
announces a decision that was never recorded; commit then publish, and a crash between them records
one nobody hears of. Here the event's Avro bytes go into `kafka_outbox` with the decision
(`stage`), and a relay publishes the rows oldest first, deleting each once the broker acked it
(`relay`). The caller relays right after its commit, so an announcement is as quick as before; a
background loop (`run_forever`) publishes whatever that missed: a crash, or Kafka away.

Delivery is at least once (a crash after the ack and before the delete sends a row again); every
consumer of these topics dedupes by its natural key. Relays on any number of processes share the
rows with `FOR UPDATE SKIP LOCKED`, so none is sent twice by two live relays. A row the broker
refuses is tried again after a growing pause (`next_attempt_at`), so one bad row never holds back the
rows behind it. No order is promised between rows: the events staged here (a job's start or
rejection, its cancel) go to different topics, where Kafka promises none either.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Integer,
    LargeBinary,
    Select,
    Text,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel, col

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import transaction, utcnow
from infiniteflow_common.events import Event, encode_event
from infiniteflow_common.observability import get_logger

log = get_logger()

OUTBOX_PUBLISHED = Counter(
    "infiniteflow_outbox_published_total", "Outbox events the broker acknowledged, by topic.", ["topic"]
)
OUTBOX_WAITING = Gauge(
    "infiniteflow_outbox_waiting_events",
    "Outbox events not yet published, as the last relay pass left them (more than 0 for long: Kafka away).",
)

# How often the background relay looks for rows the after-commit relay missed. Those are rare (a
# crash between commit and publish, or Kafka away), so the delay only applies to them.
RELAY_POLL_S = 1.0
# How long a caller waits for its own events to be acknowledged before leaving them to the
# background relay (a broker that is away would otherwise hold an API request for its 5-min timeout).
AFTER_COMMIT_RELAY_S = 10.0
# Rows one relay pass locks and publishes before it commits their deletion.
RELAY_BATCH = 100

Send = Callable[[bytes, str, str | None], Awaitable[None]]
"""Publishes Avro bytes to a topic under a key and waits for the broker's acks (`acks=all`)."""


class OutboxEvent(SQLModel, table=True):
    """One event waiting to be published (migration 0010): its topic, key and exact Avro bytes."""

    __tablename__ = "kafka_outbox"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    topic: str = Field(sa_column=Column(Text, nullable=False))
    key: str | None = Field(default=None, sa_column=Column(Text))
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    job_id: uuid.UUID | None = Field(default=None)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_error: str | None = Field(default=None, sa_column=Column(Text))


def retry_pause_s(attempts: int) -> float:
    """How long a row the broker refused `attempts` times waits before its next try (1 s doubling to 60)."""
    return float(min(60, 2 ** max(0, attempts - 1)))


class Outbox:
    """Stages events in the caller's transaction and relays them to Kafka after it commits."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalog: SchemaCatalog,
        send: Send,
        *,
        topics: Collection[str] | None = None,
    ) -> None:
        self.sessions = sessions
        self.catalog = catalog
        self.send = send
        # The topics this relay publishes; None, every one. Tests that publish to private topics
        # relay only their own rows of a database they share.
        self.topics = frozenset(topics) if topics is not None else None

    async def stage(self, session: AsyncSession, topic: str, event: Event, *, key: str | None = None) -> None:
        """Write `event` for `topic` in `session`'s transaction: published once, and only if it commits.

        Keyed by the event's job_id unless `key` says otherwise, as `Runtime.publish` keys it.
        """
        job_id = getattr(event, "job_id", None)
        session.add(
            OutboxEvent(
                topic=topic,
                key=key or (str(job_id) if job_id else None),
                value=encode_event(self.catalog, event),
                job_id=job_id,
            )
        )
        await session.flush()

    async def relay(self, *, batches: int | None = None) -> int:
        """Publish the waiting events, oldest first, until none is left (or `batches` passes ran);
        how many were published.

        Raises what the broker or the database raised; the events acknowledged before it are deleted,
        the rest stay for the next relay. Rows another relay holds are skipped: that relay sends them.
        """
        published = 0
        passes = 0
        while batches is None or passes < batches:
            passes += 1
            failure: Exception | None = None
            async with transaction(self.sessions) as session:
                rows = (await session.execute(self._due().limit(RELAY_BATCH))).scalars().all()
                sent: list[int] = []
                for row in rows:
                    assert row.id is not None  # read from the table
                    try:
                        await self.send(row.value, row.topic, row.key)
                    except Exception as exc:  # raised once what was acked is deleted
                        failure = exc
                        row.attempts += 1
                        row.last_error = repr(exc)[:1000]
                        row.next_attempt_at = utcnow() + timedelta(seconds=retry_pause_s(row.attempts))
                        # the broker is likely away: the rest wait for the next pass, untried
                        break
                    sent.append(row.id)
                    OUTBOX_PUBLISHED.labels(row.topic).inc()
                if sent:
                    await session.execute(delete(OutboxEvent).where(col(OutboxEvent.id).in_(sent)))
            published += len(sent)
            if failure is not None:
                raise failure
            if len(rows) < RELAY_BATCH:
                break
        return published

    def _due(self) -> Select[OutboxEvent]:
        """This relay's rows that may be tried now, oldest first, locked; rows another relay holds are
        skipped (that relay sends them)."""
        query = (
            select(OutboxEvent)
            .where(
                or_(
                    col(OutboxEvent.next_attempt_at).is_(None),
                    col(OutboxEvent.next_attempt_at) <= func.now(),
                )
            )
            .order_by(col(OutboxEvent.id))
            .with_for_update(skip_locked=True)
        )
        if self.topics is not None:
            query = query.where(col(OutboxEvent.topic).in_(self.topics))
        return query

    async def waiting(self) -> int:
        """How many of this relay's events wait to be published (locked ones included)."""
        query = select(func.count()).select_from(OutboxEvent)
        if self.topics is not None:
            query = query.where(col(OutboxEvent.topic).in_(self.topics))
        async with self.sessions() as session:
            return int((await session.execute(query)).scalar_one())

    async def relay_after_commit(self, **log_fields: object) -> None:
        """Relay now, right after a commit that staged events; a failure is logged, not raised.

        The decision is recorded and its event is safe in the outbox, so the caller's work is done:
        one pass, bounded in time, and the background relay publishes the rest once the broker is
        back (a send cut off here may reach Kafka and be sent again: at least once).
        """
        try:
            await asyncio.wait_for(self.relay(batches=1), AFTER_COMMIT_RELAY_S)
        except Exception as exc:  # Kafka or the database away: the background relay retries
            log.warning("outbox events left for the background relay", error=repr(exc), **log_fields)

    async def run_forever(self, poll_s: float = RELAY_POLL_S) -> None:
        """Publish what the after-commit relays missed, every `poll_s`, until cancelled."""
        while True:
            try:
                published = await self.relay()
                if published:
                    log.info("outbox events published by the background relay", events=published)
                OUTBOX_WAITING.set(await self.waiting())
            except Exception as exc:  # keep relaying once Kafka or PostgreSQL is back
                log.warning("outbox relay failed; retrying", error=repr(exc))
            await asyncio.sleep(poll_s)
