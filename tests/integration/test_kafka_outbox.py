"""The Kafka outbox on the real stack: an event is published once, and only if its transaction commits.

Ingest stages its announcements (a job started, rejected or cancelled) in the transaction that records
the decision; these tests show what a user would otherwise meet: a job announced that was never
recorded, or one recorded that nobody hears of while Kafka is away.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from sqlalchemy import delete, select, update
from sqlmodel import col

from infiniteflow_common.db import transaction
from infiniteflow_common.events import JobCancelled, VideoUploaded, decode_event
from infiniteflow_common.outbox import Outbox, OutboxEvent, retry_pause_s
from infiniteflow_common.runtime import Runtime
from services.ingest.start import JobStarter, StartResult
from tests.integration.ingest_support import (
    BrokerAway,
    isolated_settings,
    jobs_for,
    private_job_topics,
    private_runtime,
    records_keyed,
    upload,
)
from tests.integration.kafka_support import private_topic
from tests.support.clips import video

pytestmark = [pytest.mark.kafka, pytest.mark.minio, pytest.mark.postgres, pytest.mark.ffmpeg]

SETTINGS = isolated_settings()


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with private_runtime(SETTINGS) as rt:
        yield rt


@pytest.fixture
def topic(unique: str) -> Iterator[str]:
    with private_topic(SETTINGS, f"test.outbox.{unique}") as name:
        yield name


@pytest.fixture
async def outbox(runtime: Runtime, topic: str) -> AsyncIterator[Outbox]:
    """An outbox relaying only this test's topic; its rows are removed afterwards."""
    yield Outbox(runtime.sessions, runtime.catalog, runtime.send, topics=[topic])
    async with transaction(runtime.sessions) as session:
        await session.execute(delete(OutboxEvent).where(col(OutboxEvent.topic) == topic))


def cancelled(job_id: uuid.UUID) -> JobCancelled:
    return JobCancelled(
        job_id=job_id,
        tenant_id=None,
        bucket="incoming",
        key=f"tests/{job_id}.mp4",
        webhook_url=None,
        previous_status="pending",
        progress=2,
        cancelled_at=datetime.now(UTC),
    )


def job_ids_on(runtime: Runtime, topic: str, job_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """The job ids of the records on `topic` keyed by any of `job_ids`, one per record."""
    found = []
    for job_id in job_ids:
        for message in records_keyed(SETTINGS, topic, str(job_id)):
            found.append(decode_event(runtime.catalog, message.value(), JobCancelled).job_id)
    return found


async def test_an_event_of_a_rolled_back_transaction_is_never_published(
    runtime: Runtime, outbox: Outbox, topic: str
) -> None:
    job_id = uuid.uuid4()

    async def decide_then_fail() -> None:
        async with transaction(runtime.sessions) as session:
            await outbox.stage(session, topic, cancelled(job_id))
            raise RuntimeError("the decision failed after the event was staged")

    with pytest.raises(RuntimeError):
        await decide_then_fail()

    assert await outbox.relay() == 0
    assert job_ids_on(runtime, topic, [job_id]) == []


async def test_an_event_is_published_once_after_its_transaction_commits(
    runtime: Runtime, outbox: Outbox, topic: str
) -> None:
    job_id = uuid.uuid4()
    async with transaction(runtime.sessions) as session:
        await outbox.stage(session, topic, cancelled(job_id))
        assert job_ids_on(runtime, topic, [job_id]) == [], "nothing is sent before the commit"

    assert await outbox.waiting() == 1
    assert await outbox.relay() == 1
    assert await outbox.relay() == 0, "a published event is not sent again"
    assert job_ids_on(runtime, topic, [job_id]) == [job_id]
    assert await outbox.waiting() == 0


async def test_an_event_the_broker_refused_waits_without_holding_back_the_ones_behind_it(
    runtime: Runtime, outbox: Outbox, topic: str
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    flaky = Outbox(runtime.sessions, runtime.catalog, BrokerAway(runtime, refusals=1), topics=[topic])
    async with transaction(runtime.sessions) as session:
        await outbox.stage(session, topic, cancelled(first))
        await outbox.stage(session, topic, cancelled(second))

    with pytest.raises(KafkaException):
        await flaky.relay()

    async with transaction(runtime.sessions) as session:
        rows = (
            await session.execute(
                select(OutboxEvent).where(col(OutboxEvent.topic) == topic).order_by(col(OutboxEvent.id))
            )
        ).scalars()
        refused, behind = list(rows)
        assert (refused.job_id, refused.attempts, behind.attempts) == (first, 1, 0), "the rest were not tried"
        assert refused.last_error is not None
        assert "broker transport failure" in refused.last_error
        assert refused.next_attempt_at is not None
        assert refused.next_attempt_at > datetime.now(UTC)
        # a broker that keeps refusing it: its pause outlasts this test
        await session.execute(
            update(OutboxEvent)
            .where(col(OutboxEvent.id) == refused.id)
            .values(next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
        )
    assert await flaky.relay() == 1, "the event behind the refused one is not held back"
    assert job_ids_on(runtime, topic, [first, second]) == [second]

    async with transaction(runtime.sessions) as session:
        await session.execute(
            update(OutboxEvent).where(col(OutboxEvent.id) == refused.id).values(next_attempt_at=None)
        )
    assert await flaky.relay() == 1, "once its pause is over it is published"
    assert sorted(job_ids_on(runtime, topic, [first, second])) == sorted([first, second])
    assert await outbox.waiting() == 0


def test_a_refused_event_waits_longer_after_each_refusal_up_to_a_minute() -> None:
    assert [retry_pause_s(n) for n in (1, 2, 3, 4, 6, 7, 20)] == [1, 2, 4, 8, 32, 60, 60]


async def test_relays_side_by_side_publish_every_event_exactly_once(
    runtime: Runtime, outbox: Outbox, topic: str
) -> None:
    job_ids = [uuid.uuid4() for _ in range(60)]
    async with transaction(runtime.sessions) as session:
        for job_id in job_ids:
            await outbox.stage(session, topic, cancelled(job_id))
    relays = [Outbox(runtime.sessions, runtime.catalog, runtime.send, topics=[topic]) for _ in range(3)]

    counts = await asyncio.gather(*(relay.relay() for relay in relays))

    assert sum(counts) == len(job_ids)
    assert sorted(job_ids_on(runtime, topic, job_ids)) == sorted(job_ids)


async def test_a_job_started_while_kafka_is_away_is_recorded_then_announced_when_it_returns(
    runtime: Runtime, tmp_path: Path, unique: str
) -> None:
    with private_job_topics(SETTINGS, "outbox") as (uploaded, failed):
        away = BrokerAway(runtime, refusals=1_000)
        starter = JobStarter(
            sessions=runtime.sessions,
            storage=runtime.storage,
            outbox=Outbox(runtime.sessions, runtime.catalog, away, topics=[uploaded, failed]),
            settings=SETTINGS,
            uploaded_topic=uploaded,
            failed_topic=failed,
        )
        key = f"tests/{unique}/while-kafka-away.mp4"
        record = upload(runtime, SETTINGS, key, video(tmp_path / "clip.mp4", seconds=1), {})

        result = await starter.start(record, source="bucket")

        # recorded and started: the event waits in the outbox, nothing was announced
        assert (result.status, result.handled_now) == ("pending", True)
        [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, key)
        assert job.probe is not None
        assert records_keyed(SETTINGS, uploaded, str(job.id)) == []
        again = await starter.start(record, source="bucket")
        assert again == StartResult(job.id, "pending", created=False, handled_now=False), (
            "a retry finds it handled"
        )
        assert await starter.outbox.waiting() == 1, "and stages nothing more"

        # the broker is back: the background relay announces the job once
        away.refusals_left = 0
        relay = asyncio.create_task(starter.outbox.run_forever(poll_s=0.2))
        try:
            for _ in range(150):
                if await starter.outbox.waiting() == 0:
                    break
                await asyncio.sleep(0.2)
        finally:
            relay.cancel()
        [message] = records_keyed(SETTINGS, uploaded, str(job.id))
        event = decode_event(runtime.catalog, message.value(), VideoUploaded)
        assert (event.job_id, event.key, event.etag) == (job.id, key, record.etag)
