"""Cancelling a job on the real stack: the API's answers, the job row's rules, the announcement.

The API runs in-process over a private incoming bucket and private topics; the jobs are rows this
module creates (and deletes), so no pipeline service is involved.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text, update
from sqlmodel import col

from infiniteflow_common import jobs, tenants
from infiniteflow_common.db import Job, transaction
from infiniteflow_common.domain import JobStatus
from infiniteflow_common.events import JobCancelled, decode_event
from infiniteflow_common.outbox import OutboxEvent
from infiniteflow_common.runtime import Runtime
from services.ingest.start import object_record
from tests.integration.ingest_support import (
    BrokerAway,
    api_client,
    isolated_settings,
    private_job_topics,
    private_runtime,
    records_keyed,
    starter_for,
)
from tests.integration.kafka_support import private_topic

pytestmark = [pytest.mark.kafka, pytest.mark.minio, pytest.mark.postgres]

SETTINGS = isolated_settings(api_auth_required=True, api_rate_limit_per_minute=10_000)


@pytest.fixture(scope="module")
def topics() -> Iterator[tuple[str, str, str]]:
    with (
        private_job_topics(SETTINGS, "cancel") as (uploaded, failed),
        private_topic(SETTINGS, f"test.cancel.cancelled.{uuid.uuid4().hex[:8]}") as cancelled,
    ):
        yield uploaded, failed, cancelled


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with private_runtime(SETTINGS) as rt:
        yield rt


@pytest.fixture
async def client(runtime: Runtime, topics: tuple[str, str, str]) -> AsyncIterator[httpx.AsyncClient]:
    uploaded, failed, cancelled = topics
    async with api_client(runtime, SETTINGS, (uploaded, failed), cancelled_topic=cancelled) as c:
        yield c


@pytest.fixture
async def owned(runtime: Runtime) -> AsyncIterator[list[uuid.UUID]]:
    """Job ids this test creates; deleted afterwards (with their tenants' rows)."""
    ids: list[uuid.UUID] = []
    yield ids
    async with transaction(runtime.sessions) as session:
        await session.execute(text("delete from jobs where id = any(:ids)"), {"ids": ids})


async def _tenant(runtime: Runtime) -> tuple[str, dict[str, str]]:
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    async with transaction(runtime.sessions) as session:
        await tenants.create_tenant(session, tenant_id)
        issued = await tenants.issue_key(session, tenant_id)
    return tenant_id, {"Authorization": f"Bearer {issued.secret}"}


async def _job(
    runtime: Runtime, topics: tuple[str, str, str], owned: list[uuid.UUID], tenant_id: str, **fields: object
) -> Job:
    """A pending job of `tenant_id` (a drop under its prefix), optionally moved to other fields."""
    starter = starter_for(runtime, SETTINGS, topics[0], topics[1])
    record = object_record(
        bucket=SETTINGS.incoming_bucket,
        key=f"tenants/{tenant_id}/drops/{uuid.uuid4().hex[:6]}.mp4",
        etag=uuid.uuid4().hex,
        size=10,
        metadata={"webhook-url": "http://127.0.0.1:9/hook"},
        version_id=None,
        created_at=datetime.now(UTC),
    )
    job, _ = await starter.create(record, source="bucket")
    owned.append(job.id)
    if fields:
        async with transaction(runtime.sessions) as session:
            await session.execute(update(Job).where(col(Job.id) == job.id).values(**fields))
    return job


def _cancel_events(topic: str, job_id: uuid.UUID, runtime: Runtime) -> list[JobCancelled]:
    return [
        decode_event(runtime.catalog, m.value(), JobCancelled)
        for m in records_keyed(SETTINGS, topic, str(job_id))
    ]


async def test_cancelling_a_running_job_makes_it_cancelled_and_announces_it_once_per_request(
    client: httpx.AsyncClient, runtime: Runtime, topics: tuple[str, str, str], owned: list[uuid.UUID]
) -> None:
    tenant_id, key = await _tenant(runtime)
    job = await _job(runtime, topics, owned, tenant_id, status="interpolating", progress=37)

    first = await client.post(f"/api/jobs/{job.id}/cancel", headers=key)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["status"], body["progress"], body["cancel_url"]) == ("cancelled", 37, None)
    assert body["cancelled_at"] is not None
    again = await client.post(f"/api/jobs/{job.id}/cancel", headers=key)
    assert again.status_code == 200, "cancel is idempotent"
    assert again.json()["cancelled_at"] == body["cancelled_at"]

    events = _cancel_events(topics[2], job.id, runtime)
    assert [e.previous_status for e in events] == ["interpolating", None]
    assert {(e.tenant_id, e.webhook_url, e.progress) for e in events} == {
        (tenant_id, "http://127.0.0.1:9/hook", 37)
    }
    status = await client.get(f"/api/status/{job.id}", headers=key)
    assert status.json()["status"] == "cancelled"


async def test_a_cancel_while_kafka_is_away_is_answered_and_announced_once_it_returns(
    runtime: Runtime, topics: tuple[str, str, str], owned: list[uuid.UUID]
) -> None:
    uploaded, failed, cancelled = topics
    tenant_id, key = await _tenant(runtime)
    job = await _job(runtime, topics, owned, tenant_id, status="interpolating", progress=12)
    away = BrokerAway(runtime, refusals=1_000)
    async with api_client(runtime, SETTINGS, (uploaded, failed), cancelled_topic=cancelled, send=away) as c:
        response = await c.post(f"/api/jobs/{job.id}/cancel", headers=key)

    # the cancel is recorded and answered; its announcement waits for the broker
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert _cancel_events(cancelled, job.id, runtime) == []
    away.refusals_left = 0
    relay = starter_for(runtime, SETTINGS, uploaded, failed, cancelled).outbox
    async with transaction(runtime.sessions) as session:  # its pause after the refusal, over
        await session.execute(
            update(OutboxEvent).where(col(OutboxEvent.job_id) == job.id).values(next_attempt_at=None)
        )
    assert await relay.relay() == 1
    [event] = _cancel_events(cancelled, job.id, runtime)
    assert (event.previous_status, event.progress) == ("interpolating", 12)


async def test_another_tenants_job_answers_404_and_stays_untouched(
    client: httpx.AsyncClient, runtime: Runtime, topics: tuple[str, str, str], owned: list[uuid.UUID]
) -> None:
    alice, _alice_key = await _tenant(runtime)
    _bob, bob_key = await _tenant(runtime)
    job = await _job(runtime, topics, owned, alice)

    response = await client.post(f"/api/jobs/{job.id}/cancel", headers=bob_key)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "E_JOB_NOT_FOUND"
    unknown = await client.post(f"/api/jobs/{uuid.uuid4()}/cancel", headers=bob_key)
    assert unknown.status_code == 404
    async with runtime.sessions() as session:
        assert (await jobs.get_job(session, job.id)).status == "pending"  # type: ignore[union-attr]
    assert _cancel_events(topics[2], job.id, runtime) == []


@pytest.mark.parametrize("final", ["completed", "completed_with_warnings", "failed"])
async def test_a_finished_job_cannot_be_cancelled(
    client: httpx.AsyncClient,
    runtime: Runtime,
    topics: tuple[str, str, str],
    owned: list[uuid.UUID],
    final: str,
) -> None:
    tenant_id, key = await _tenant(runtime)
    job = await _job(runtime, topics, owned, tenant_id, status=final, progress=100)

    response = await client.post(f"/api/jobs/{job.id}/cancel", headers=key)
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["status"]) == ("E_JOB_FINAL", final)
    assert final in error["message"]


async def test_a_cancelled_job_never_completes_or_fails(
    runtime: Runtime, topics: tuple[str, str, str], owned: list[uuid.UUID]
) -> None:
    tenant_id, _ = await _tenant(runtime)
    job = await _job(runtime, topics, owned, tenant_id, status="muxing", progress=95)
    other = await _job(runtime, topics, owned, tenant_id, status="interpolating")

    async with transaction(runtime.sessions) as session:
        result = await jobs.cancel(session, job.id)
    assert result is not None
    assert (result.previous_status, result.cancelled_now, result.job.status) == ("muxing", True, "cancelled")
    async with transaction(runtime.sessions) as session:
        assert not await jobs.advance(session, job.id, JobStatus.COMPLETED, progress=100, output_key="x")
        assert not await jobs.fail(session, job.id, "E_LATE", "too late")
        await jobs.set_progress(session, job.id, 100)
        again = await jobs.cancel(session, job.id)
        assert again is not None
        assert not again.cancelled_now
        assert await jobs.is_cancelled(session, job.id)
        assert not await jobs.is_cancelled(session, other.id)
        assert not await jobs.is_cancelled(session, uuid.uuid4())
        assert await jobs.cancelled_among(session, [job.id, other.id, uuid.uuid4()]) == {job.id}
        assert await jobs.cancel(session, uuid.uuid4()) is None
    async with runtime.sessions() as session:
        row = await jobs.get_job(session, job.id)
    assert row is not None
    assert (row.status, row.progress, row.output_key, row.error_code) == ("cancelled", 95, None, None)


async def test_the_job_list_shows_only_the_callers_jobs_newest_first_in_pages(
    client: httpx.AsyncClient, runtime: Runtime, topics: tuple[str, str, str], owned: list[uuid.UUID]
) -> None:
    tenant_id, key = await _tenant(runtime)
    other, _ = await _tenant(runtime)
    made = [await _job(runtime, topics, owned, tenant_id) for _ in range(5)]
    await _job(runtime, topics, owned, other)

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/api/jobs", params=params, headers=key)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["jobs"]) <= 2
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [str(j.id) for j in reversed(made)]
    bad = await client.get("/api/jobs", params={"cursor": "not-a-cursor"}, headers=key)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "E_CURSOR_INVALID")
    too_many = await client.get("/api/jobs", params={"limit": "1000"}, headers=key)
    assert too_many.status_code == 422
    assert (await client.get("/api/jobs")).status_code == 401
