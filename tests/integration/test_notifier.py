"""The notifier against real PostgreSQL, Kafka and MinIO, delivering to a receiver run by the test.

Each test owns its job ids (the delivery loop only claims those) and its private topics, and deletes
its rows afterwards, so it neither sees nor disturbs other webhooks in the shared database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from faststream.confluent import KafkaBroker
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from standardwebhooks import Webhook as Verifier

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import WebhookDelivery, make_engine, session_factory, transaction
from infiniteflow_common.events import JobCancelled, JobCompleted, JobFailed, JobParams, encode_event
from infiniteflow_common.kafka import H_ERROR_CODE, H_ORIGIN_TOPIC, Delivery, make_broker, publish_dead_letter
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from infiniteflow_common.topics import dlq_of
from services.notifier.config import NotifierSettings
from services.notifier.delivery import Deliverer
from services.notifier.egress import Resolver, system_resolver
from services.notifier.handlers import JobEventHandler
from services.notifier.store import Webhook, claim_due, enable_endpoint, endpoint_disabled_at
from services.notifier.webhooks import EventType, Signer, webhook_id
from tests.integration.kafka_support import (
    committed_offset,
    private_topic,
    produce,
    read_all,
    running_consumer,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres]

SECRET = "whsec_" + base64.b64encode(b"integration-test-webhook-secret").decode()
CATALOG = SchemaCatalog.load()


# --- a webhook receiver the test scripts ------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request; `delay_s` longer than the client timeout is a timeout."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1:<free port> recording every POST and answering from a script per path."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.default: dict[str, Reply] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                reply = receiver._record(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                time.sleep(reply.delay_s)
                with contextlib.suppress(OSError):  # the client may have given up (a timeout)
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            script = self.scripts.get(request.path)
            if script:
                return script.pop(0)
            return self.default.get(request.path, Reply())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path: str, *replies: Reply, then: Reply | None = None) -> str:
        """Answer `replies` in order on `path`, then `then` (200 by default); returns the URL."""
        with self._lock:
            self.scripts[path] = list(replies)
            if then is not None:
                self.default[path] = then
        return self.url(path)

    def requests(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


# --- the notifier's parts, wired to the real servers --------------------------------------------------


@pytest.fixture(scope="module")
def notifier_settings() -> NotifierSettings:
    return NotifierSettings(
        webhook_secret=SECRET,
        webhook_retry_schedule_s=(0.05, 0.05, 0.05),
        webhook_poll_interval_s=0.05,
        webhook_timeout_s=0.5,
        webhook_batch_size=4,
    )


@pytest.fixture(scope="module")
async def sessions(settings: CommonSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url.get_secret_value())
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="module")
async def broker(settings: CommonSettings) -> AsyncIterator[KafkaBroker]:
    kafka = make_broker(settings, "notifier-test")
    await kafka.start()
    yield kafka
    await kafka.stop()


@pytest.fixture
async def jobs(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[set[uuid.UUID]]:
    """The job ids this test owns; their webhooks and attempts are deleted afterwards."""
    owned: set[uuid.UUID] = set()
    yield owned
    if owned:
        async with transaction(sessions) as session:
            await session.execute(delete(Webhook).where(col(Webhook.job_id).in_(owned)))
            await session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.job_id).in_(owned)))
            await session.execute(text("delete from jobs where id = any(:ids)"), {"ids": list(owned)})


def presign(bucket: str, key: str, ttl: timedelta) -> str:
    return str(make_client(CommonSettings()).presigned_get_object(bucket, key, expires=ttl))


def handler(event_type: EventType, sessions: async_sessionmaker[AsyncSession]) -> JobEventHandler:
    return JobEventHandler(
        event_type=event_type,
        catalog=CATALOG,
        sessions=sessions,
        presign=presign,
        output_url_ttl=timedelta(days=7),
    )


def deliverer(
    settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    broker: KafkaBroker | None = None,
    resolve: Resolver = system_resolver,
) -> Deliverer:
    async def dead_letter(origin: Delivery, *, code: str, reason: str, attempts: int, job_id: str) -> None:
        assert broker is not None, "this test expected no dead letter"
        await publish_dead_letter(
            broker,
            CATALOG,
            origin,
            service="notifier",
            code=code,
            reason=reason,
            attempts=attempts,
            job_id=job_id,
        )

    return Deliverer(
        settings=settings,
        sessions=sessions,
        signer=Signer(SECRET),
        dead_letter=dead_letter,
        only_jobs=jobs,
        resolve=resolve,
    )


@contextlib.asynccontextmanager
async def delivering(loop: Deliverer) -> AsyncIterator[Deliverer]:
    """Run the delivery loop for the block; a loop that crashed fails the test."""
    task = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def params(url: str | None) -> JobParams:
    return JobParams(multiplier=2, target_fps=None, engine="rife", quality="high", webhook_url=url)


def completed(job_id: uuid.UUID, url: str | None, *, output_key: str = "outputs/x/out.mp4") -> JobCompleted:
    return JobCompleted(
        job_id=job_id,
        bucket="incoming",
        key="drops/clip 1.mp4",
        params=params(url),
        output_bucket="outputs",
        output_key=output_key,
        output_size_bytes=11,
        in_fps_num=30,
        in_fps_den=1,
        out_fps_num=60,
        out_fps_den=1,
        in_frame_count=300,
        out_frame_count=600,
        duration_s=10.0,
        processing_seconds=4.25,
        completed_at=datetime.now(UTC),
    )


def failed(job_id: uuid.UUID, url: str | None) -> JobFailed:
    return JobFailed(
        job_id=job_id,
        bucket="incoming",
        key="drops/broken.mp4",
        params=params(url) if url else None,
        stage="probe",
        chunk_index=None,
        error_code="E_PROBE_UNSUPPORTED_CODEC",
        error_message="the video stream uses codec 'xyz', which FFmpeg cannot decode",
        failed_at=datetime.now(UTC),
    )


def delivery_of(
    event: JobCompleted | JobFailed | JobCancelled, topic: str = "job.completed", offset: int = 0
) -> Delivery:
    job_id = str(event.job_id)
    return Delivery(
        topic=topic,
        partition=0,
        offset=offset,
        key=job_id.encode(),
        value=encode_event(CATALOG, event),
        headers={"trace": job_id},
        timestamp_ms=int(time.time() * 1000),
    )


async def webhook_row(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> list[Webhook]:
    async with sessions() as session:
        return list((await session.execute(select(Webhook).where(col(Webhook.job_id) == job_id))).scalars())


async def attempts(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> list[WebhookDelivery]:
    async with sessions() as session:
        statement = (
            select(WebhookDelivery)
            .where(col(WebhookDelivery.job_id) == job_id)
            .order_by(col(WebhookDelivery.attempt))
        )
        return list((await session.execute(statement)).scalars())


async def status_is(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, *wanted: str) -> bool:
    rows = await webhook_row(sessions, job_id)
    return len(rows) == 1 and rows[0].status in wanted


def verified(request: Received) -> dict[str, Any]:
    """The body, after checking its signature exactly as a receiver using `standardwebhooks` would."""
    return dict(Verifier(SECRET).verify(request.body, request.headers))


# --- the specification ---------------------------------------------------------------------------------


@pytest.mark.minio
async def test_a_completed_job_sends_one_signed_webhook_with_a_working_download_url(
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    output_key = f"outputs/{job_id}/clip ×2.mp4"
    storage = make_client(settings)
    storage.put_object(settings.output_bucket, output_key, io.BytesIO(b"mp4 payload"), 11)
    try:
        url = receiver.script(f"/completed/{job_id}")
        await handler(EventType.JOB_COMPLETED, sessions)(
            delivery_of(completed(job_id, url, output_key=output_key))
        )
        async with delivering(deliverer(notifier_settings, sessions, jobs)):
            await eventually(lambda: status_is(sessions, job_id, "delivered"), 10, "the webhook delivered")
        [request] = receiver.requests(f"/completed/{job_id}")
        message = verified(request)
        assert request.headers["webhook-id"] == webhook_id(job_id, EventType.JOB_COMPLETED)
        assert request.headers["user-agent"] == "InfiniteFlow-Webhooks/1"
        assert request.headers["content-type"] == "application/json"
        assert message["type"] == "job.completed"
        data = message["data"]
        assert data["job_id"] == str(job_id)
        assert data["source"] == {"bucket": "incoming", "key": "drops/clip 1.mp4"}
        assert data["params"]["multiplier"] == 2
        assert data["input"] == {"fps": "30/1", "frame_count": 300}
        assert data["output"]["fps"] == "60/1"
        assert data["output"]["frame_count"] == 600
        assert (data["duration_s"], data["processing_seconds"]) == (10.0, 4.25)
        async with httpx.AsyncClient() as client:
            download = await client.get(data["output"]["url"])
        assert download.status_code == 200
        assert download.content == b"mp4 payload"
        [attempt] = await attempts(sessions, job_id)
        assert (attempt.attempt, attempt.status_code, attempt.outcome) == (1, 200, "delivered")
        assert attempt.latency_ms is not None
        [row] = await webhook_row(sessions, job_id)
        assert row.delivered_at is not None
        assert row.body.encode() == request.body, "the stored body is the exact body sent"
    finally:
        storage.remove_object(settings.output_bucket, output_key)


async def test_timeouts_5xx_and_429_are_retried_with_the_same_webhook_id_until_delivered(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    path = f"/flaky/{job_id}"
    url = receiver.script(
        path, Reply(500), Reply(429, {"retry-after": "0"}), Reply(200, delay_s=1.0), Reply(200)
    )
    await handler(EventType.JOB_COMPLETED, sessions)(delivery_of(completed(job_id, url)))
    async with delivering(deliverer(notifier_settings, sessions, jobs)):
        await eventually(lambda: status_is(sessions, job_id, "delivered"), 10, "delivery after retries")
    requests = receiver.requests(path)
    assert len(requests) == 4
    assert {r.headers["webhook-id"] for r in requests} == {webhook_id(job_id, EventType.JOB_COMPLETED)}
    assert len({r.body for r in requests}) == 1, "every attempt sends the same body"
    for request in requests:
        verified(request)
    recorded = await attempts(sessions, job_id)
    assert [(a.attempt, a.status_code, a.outcome) for a in recorded] == [
        (1, 500, "retry"),
        (2, 429, "retry"),
        (3, None, "retry"),
        (4, 200, "delivered"),
    ]
    assert recorded[2].error is not None
    assert "timeout" in recorded[2].error
    assert recorded[0].error == "HTTP 500: ok"
    [row] = await webhook_row(sessions, job_id)
    assert row.attempts == 4


@pytest.mark.kafka
async def test_a_replayed_event_makes_one_webhook_and_one_delivery_and_commits_both_offsets(
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
    unique: str,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    url = receiver.script(f"/replayed/{job_id}")
    payload = encode_event(CATALOG, completed(job_id, url))
    group = f"notifier-{unique}"
    with private_topic(settings, f"test.notifier.replay.{unique}") as topic:
        produce(settings, topic, [payload, payload], key=str(job_id).encode())
        async with running_consumer(
            settings, topic, handler(EventType.JOB_COMPLETED, sessions), group=group, catalog=CATALOG
        ):
            await eventually(
                lambda: committed_offset(settings, topic, group) == 2, 20, "both offsets committed"
            )
        async with delivering(deliverer(notifier_settings, sessions, jobs)):
            await eventually(lambda: status_is(sessions, job_id, "delivered"), 10, "the webhook delivered")
    [row] = await webhook_row(sessions, job_id)
    assert (row.origin_topic, row.origin_offset, row.origin_payload) == (topic, 0, payload)
    assert len(receiver.requests(f"/replayed/{job_id}")) == 1
    assert len(await attempts(sessions, job_id)) == 1


@pytest.mark.kafka
async def test_a_4xx_is_not_retried_and_ends_in_the_dlq_as_rejected(
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    broker: KafkaBroker,
    jobs: set[uuid.UUID],
    receiver: Receiver,
    unique: str,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    url = receiver.script(f"/gone/{job_id}", then=Reply(404))
    with private_topic(settings, f"test.notifier.rejected.{unique}") as topic:
        origin = delivery_of(completed(job_id, url), topic=topic, offset=7)
        await handler(EventType.JOB_COMPLETED, sessions)(origin)
        async with delivering(deliverer(notifier_settings, sessions, jobs, broker)):
            await eventually(lambda: dead_lettered(sessions, job_id), 10, "the dead letter published")
        [dead] = read_all(settings, dlq_of(topic), 1)
    assert len(receiver.requests(f"/gone/{job_id}")) == 1
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers[H_ERROR_CODE] == "E_WEBHOOK_REJECTED"
    assert headers[H_ORIGIN_TOPIC] == topic
    _, envelope = CATALOG.decode(dead.value(), "DeadLetter")
    assert envelope["error_code"] == "E_WEBHOOK_REJECTED"
    assert envelope["payload"] == origin.value, "the original event, byte for byte"
    assert envelope["origin_offset"] == 7
    assert envelope["job_id"] == job_id
    assert envelope["attempts"] == 1
    assert "HTTP 404" in envelope["reason"]
    [attempt] = await attempts(sessions, job_id)
    assert (attempt.status_code, attempt.outcome) == (404, "rejected")


@pytest.mark.kafka
async def test_410_gone_disables_the_endpoint_for_later_jobs(
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    broker: KafkaBroker,
    jobs: set[uuid.UUID],
    receiver: Receiver,
    unique: str,
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    jobs.update((first, second))
    path = f"/unsubscribed/{first}"
    url = receiver.script(path, then=Reply(410))
    with private_topic(settings, f"test.notifier.gone.{unique}") as topic:
        await handler(EventType.JOB_COMPLETED, sessions)(delivery_of(completed(first, url), topic=topic))
        async with delivering(deliverer(notifier_settings, sessions, jobs, broker)):
            await eventually(lambda: dead_lettered(sessions, first), 10, "the first dead letter")
            await handler(EventType.JOB_COMPLETED, sessions)(
                delivery_of(completed(second, url), topic=topic, offset=1)
            )
            await eventually(lambda: dead_lettered(sessions, second), 10, "the second dead letter")
        dead = read_all(settings, dlq_of(topic), 2)
    codes = sorted(dict(d.headers())[H_ERROR_CODE].decode() for d in dead)
    assert codes == ["E_WEBHOOK_ENDPOINT_DISABLED", "E_WEBHOOK_GONE"]
    assert len(receiver.requests(path)) == 1, "nothing is sent to a disabled endpoint"
    [refused] = await attempts(sessions, second)
    assert refused.status_code is None
    assert "410 Gone" in (refused.error or "")
    async with transaction(sessions) as session:
        assert await enable_endpoint(session, url), "an operator can enable it again"
        assert await endpoint_disabled_at(session, url) is None


@pytest.mark.kafka
async def test_an_exhausted_schedule_ends_in_the_dlq(
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    broker: KafkaBroker,
    jobs: set[uuid.UUID],
    receiver: Receiver,
    unique: str,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    url = receiver.script(f"/down/{job_id}", then=Reply(503))
    with private_topic(settings, f"test.notifier.exhausted.{unique}") as topic:
        origin = delivery_of(failed(job_id, url), topic=topic)
        await handler(EventType.JOB_FAILED, sessions)(origin)
        async with delivering(deliverer(notifier_settings, sessions, jobs, broker)):
            await eventually(lambda: dead_lettered(sessions, job_id), 10, "the dead letter published")
        [dead] = read_all(settings, dlq_of(topic), 1)
    _, envelope = CATALOG.decode(dead.value(), "DeadLetter")
    assert envelope["error_code"] == "E_WEBHOOK_EXHAUSTED"
    assert envelope["payload"] == origin.value
    assert envelope["attempts"] == 4
    outcomes = [(a.attempt, a.status_code, a.outcome) for a in await attempts(sessions, job_id)]
    assert outcomes == [(1, 503, "retry"), (2, 503, "retry"), (3, 503, "retry"), (4, 503, "exhausted")]
    assert len(receiver.requests(f"/down/{job_id}")) == 4
    [row] = await webhook_row(sessions, job_id)
    assert (row.status, row.error_code) == ("exhausted", "E_WEBHOOK_EXHAUSTED")


async def dead_lettered(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> bool:
    rows = await webhook_row(sessions, job_id)
    return len(rows) == 1 and rows[0].dead_lettered_at is not None


async def test_a_failed_job_sends_a_job_failed_webhook_with_its_error(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    url = receiver.script(f"/failed/{job_id}")
    await handler(EventType.JOB_FAILED, sessions)(delivery_of(failed(job_id, url), topic="job.failed"))
    async with delivering(deliverer(notifier_settings, sessions, jobs)):
        await eventually(lambda: status_is(sessions, job_id, "delivered"), 10, "the webhook delivered")
    [request] = receiver.requests(f"/failed/{job_id}")
    message = verified(request)
    assert request.headers["webhook-id"] == webhook_id(job_id, EventType.JOB_FAILED)
    assert message["type"] == "job.failed"
    assert message["data"]["job_id"] == str(job_id)
    assert message["data"]["source"] == {"bucket": "incoming", "key": "drops/broken.mp4"}
    assert message["data"]["error"] == {
        "code": "E_PROBE_UNSUPPORTED_CODEC",
        "message": "the video stream uses codec 'xyz', which FFmpeg cannot decode",
        "stage": "probe",
        "chunk_index": None,
    }


async def test_a_failed_event_without_params_takes_the_webhook_url_from_the_job_row(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    url = receiver.script(f"/from-row/{job_id}")
    async with transaction(sessions) as session:
        await session.execute(
            text(
                "insert into jobs (id, source, source_bucket, source_key, source_etag, params) "
                "values (:id, 'bucket', 'incoming', :key, 'etag', cast(:params as jsonb))"
            ),
            {"id": job_id, "key": f"k/{job_id}", "params": params(url).model_dump_json()},
        )
    await handler(EventType.JOB_FAILED, sessions)(delivery_of(failed(job_id, None), topic="job.failed"))
    async with delivering(deliverer(notifier_settings, sessions, jobs)):
        await eventually(lambda: status_is(sessions, job_id, "delivered"), 10, "the webhook delivered")
    [request] = receiver.requests(f"/from-row/{job_id}")
    assert verified(request)["data"]["params"]["webhook_url"] == url


async def test_an_event_without_a_webhook_url_is_recorded_as_skipped_and_sends_nothing(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    await handler(EventType.JOB_COMPLETED, sessions)(delivery_of(completed(job_id, None)))
    loop = deliverer(notifier_settings, sessions, jobs)
    async with httpx.AsyncClient() as client:
        loop.client = client
        await loop.run_once()
    [row] = await webhook_row(sessions, job_id)
    assert (row.status, row.attempts, row.url, row.next_attempt_at) == ("skipped", 0, None, None)
    assert json.loads(row.body)["type"] == "job.completed"
    assert await attempts(sessions, job_id) == []


async def test_two_delivery_loops_share_the_work_and_send_each_webhook_once(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
) -> None:
    job_ids = [uuid.uuid4() for _ in range(12)]
    jobs.update(job_ids)
    path = f"/shared/{job_ids[0]}"
    url = receiver.script(path, then=Reply(200, delay_s=0.05))
    store = handler(EventType.JOB_COMPLETED, sessions)
    for job_id in job_ids:
        await store(delivery_of(completed(job_id, url)))

    async def all_delivered() -> bool:
        return all([await status_is(sessions, j, "delivered") for j in job_ids])

    first, second = deliverer(notifier_settings, sessions, jobs), deliverer(notifier_settings, sessions, jobs)
    async with delivering(first), delivering(second):
        await eventually(all_delivered, 10, "every webhook delivered")
    ids = [r.headers["webhook-id"] for r in receiver.requests(path)]
    assert sorted(ids) == sorted(webhook_id(j, EventType.JOB_COMPLETED) for j in job_ids)


async def test_a_webhook_claimed_by_an_instance_that_died_is_sent_by_another_after_its_lease(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    url = receiver.script(f"/orphan/{job_id}")
    await handler(EventType.JOB_COMPLETED, sessions)(delivery_of(completed(job_id, url)))
    async with transaction(sessions) as session:  # an instance claims it, then dies before sending
        [claimed] = await claim_due(session, now=datetime.now(UTC), limit=10, lease_s=0.3, only_jobs={job_id})
    assert claimed.attempts == 1
    async with delivering(deliverer(notifier_settings, sessions, jobs)):
        await eventually(lambda: status_is(sessions, job_id, "delivered"), 10, "delivery after the lease")
    assert len(receiver.requests(f"/orphan/{job_id}")) == 1
    assert [(a.attempt, a.outcome) for a in await attempts(sessions, job_id)] == [(2, "delivered")]


async def test_a_cancelled_job_sends_one_signed_job_cancelled_webhook_however_often_it_is_announced(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
    receiver: Receiver,
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    url = receiver.script(f"/cancelled/{job_id}")
    async with transaction(sessions) as session:
        await session.execute(
            text(
                "insert into jobs (id, source, source_bucket, source_key, source_etag, params) "
                "values (:id, 'bucket', 'incoming', :key, 'etag', cast(:params as jsonb))"
            ),
            {"id": job_id, "key": f"k/{job_id}", "params": params(url).model_dump_json()},
        )
    at = datetime(2026, 11, 30, 21, 0, 5, 120000, tzinfo=UTC)
    first = JobCancelled(
        job_id=job_id,
        tenant_id=None,
        bucket="incoming",
        key=f"k/{job_id}",
        webhook_url=url,
        previous_status="interpolating",
        progress=40,
        cancelled_at=at,
    )
    repeat = first.model_copy(update={"previous_status": None})
    store = handler(EventType.JOB_CANCELLED, sessions)
    await store(delivery_of(first, topic="job.cancelled"))
    await store(delivery_of(repeat, topic="job.cancelled", offset=1))
    async with delivering(deliverer(notifier_settings, sessions, jobs)):
        await eventually(lambda: status_is(sessions, job_id, "delivered"), 10, "the webhook delivered")
    [request] = receiver.requests(f"/cancelled/{job_id}")
    message = verified(request)
    assert request.headers["webhook-id"] == webhook_id(job_id, EventType.JOB_CANCELLED)
    assert message["type"] == "job.cancelled"
    assert message["timestamp"] == "2026-11-30T21:00:05.120Z"
    assert message["data"] == {
        "job_id": str(job_id),
        "status": "cancelled",
        "source": {"bucket": "incoming", "key": f"k/{job_id}"},
        "params": params(url).model_dump(mode="json"),
        "previous_status": "interpolating",
        "progress": 40,
        "cancelled_at": "2026-11-30T21:00:05.120Z",
    }


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks..example.com/in", "E_WEBHOOK_URL_INVALID"),  # getaddrinfo raised UnicodeError
        ("http://" + "a" * 64 + ".example.com/in", "E_WEBHOOK_URL_INVALID"),
        ("http://100.100.100.200/latest/meta-data/", "E_WEBHOOK_DESTINATION_REFUSED"),  # CGNAT metadata
    ],
)
async def test_a_webhook_url_that_can_never_be_sent_to_costs_one_attempt_and_the_loop_goes_on(
    settings: CommonSettings,
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    broker: KafkaBroker,
    jobs: set[uuid.UUID],
    receiver: Receiver,
    unique: str,
    url: str,
    code: str,
) -> None:
    bad, good = uuid.uuid4(), uuid.uuid4()
    jobs.update({bad, good})
    good_url = receiver.script(f"/after-bad/{good}")
    with private_topic(settings, f"test.notifier.badhost.{unique}") as topic:
        # stored before ingest checked hosts (or by an older version): the notifier must cope on its own
        await handler(EventType.JOB_FAILED, sessions)(delivery_of(failed(bad, url), topic=topic))
        await handler(EventType.JOB_FAILED, sessions)(
            delivery_of(failed(good, good_url), topic=topic, offset=1)
        )
        async with delivering(deliverer(notifier_settings, sessions, jobs, broker)):
            await eventually(lambda: dead_lettered(sessions, bad), 10, "the bad URL's webhook to end")
            await eventually(lambda: status_is(sessions, good, "delivered"), 10, "the next webhook delivered")
        [dead] = read_all(settings, dlq_of(topic), 1)
    [attempt] = await attempts(sessions, bad)
    assert (attempt.status_code, attempt.outcome) == (None, "rejected")
    [row] = await webhook_row(sessions, bad)
    assert (row.status, row.error_code) == ("exhausted", code)
    assert dict(dead.headers())[H_ERROR_CODE] == code.encode()


async def test_a_name_that_does_not_resolve_is_a_failed_attempt_retried_on_the_schedule_until_exhausted(
    notifier_settings: NotifierSettings,
    sessions: async_sessionmaker[AsyncSession],
    jobs: set[uuid.UUID],
) -> None:
    job_id = uuid.uuid4()
    jobs.add(job_id)
    lookups: list[str] = []

    def no_dns(host: str, port: int) -> list[str]:
        lookups.append(host)
        raise OSError("Temporary failure in name resolution")

    await handler(EventType.JOB_FAILED, sessions)(
        delivery_of(failed(job_id, "https://hooks.example.com/in"), topic="job.failed")
    )
    dead: list[str] = []

    async def dead_letter(origin: Delivery, *, code: str, reason: str, attempts: int, job_id: str) -> None:
        dead.append(code)

    loop = Deliverer(
        settings=notifier_settings,
        sessions=sessions,
        signer=Signer(SECRET),
        dead_letter=dead_letter,
        only_jobs=jobs,
        resolve=no_dns,
    )
    async with delivering(loop):
        await eventually(lambda: status_is(sessions, job_id, "exhausted"), 10, "the schedule to run out")
        await eventually(lambda: dead == ["E_WEBHOOK_EXHAUSTED"], 10, "the dead letter")
    outcomes = [(a.attempt, a.outcome) for a in await attempts(sessions, job_id)]
    assert outcomes == [(1, "retry"), (2, "retry"), (3, "retry"), (4, "exhausted")]
    assert lookups == ["hooks.example.com"] * 4
