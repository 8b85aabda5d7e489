"""Ingest's `minio.events` handler: which notifications start a job, with what, and which start none.

Its `start_job` (probe, job row, `video.uploaded`) needs MinIO and PostgreSQL and is covered by
tests/integration/test_ingest_start.py; here it is a list that keeps what it was asked to start.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from infiniteflow_common.kafka import Delivery
from infiniteflow_common.minio_events import MalformedSourceEvent, ObjectCreated
from infiniteflow_common.topics import Topic
from services.ingest.source_events import SourceEventHandler

INCOMING = "incoming"
TEST_EVENT = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": INCOMING}).encode()
"""What MinIO sends when a bucket's notifications are set up."""


def record(bucket: str, key: str, *, name: str = "s3:ObjectCreated:Put", **obj: Any) -> dict[str, Any]:
    """One record of a MinIO notification, as MinIO writes it (the key URL-encoded)."""
    return {
        "eventName": name,
        "eventTime": "2026-11-23T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 3, "eTag": '"abc"', **obj}},
    }


def notification(*records: dict[str, Any]) -> Delivery:
    body = {"EventName": "s3:ObjectCreated:Put", "Records": list(records)}
    return Delivery(Topic.MINIO_EVENTS, 0, 7, b"incoming/x", json.dumps(body).encode(), {})


def raw(payload: bytes) -> Delivery:
    return Delivery(Topic.MINIO_EVENTS, 0, 7, b"incoming/x", payload, {})


class Starts:
    """`start_job`: keeps every object it is asked to start a job for."""

    def __init__(self) -> None:
        self.objects: list[ObjectCreated] = []

    async def __call__(self, created: ObjectCreated) -> None:
        self.objects.append(created)


def ignored(reason: str) -> float:
    return REGISTRY.get_sample_value("infiniteflow_source_events_ignored_total", {"reason": reason}) or 0.0


@pytest.fixture
def starts() -> Starts:
    return Starts()


@pytest.fixture
def handler(starts: Starts) -> SourceEventHandler:
    return SourceEventHandler(incoming_bucket=INCOMING, start_job=starts)


async def test_an_upload_to_the_incoming_bucket_starts_one_job_with_what_minio_said_about_it(
    handler: SourceEventHandler, starts: Starts
) -> None:
    upload = record(
        INCOMING,
        "holiday/my+clip%C3%BC.mp4",
        versionId="v-1",
        userMetadata={"X-Amz-Meta-Multiplier": "4", "X-Amz-Meta-Webhook-Url": "https://hooks.example/x"},
    )
    await handler(notification(upload))

    [created] = starts.objects
    assert (created.bucket, created.key, created.etag, created.version_id, created.size) == (
        INCOMING, "holiday/my clipü.mp4", "abc", "v-1", 3,
    )  # fmt: skip
    assert created.user_metadata == {"multiplier": "4", "webhook-url": "https://hooks.example/x"}
    assert created.event_time == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


async def test_each_upload_of_one_notification_starts_its_own_job_in_the_order_minio_listed_them(
    handler: SourceEventHandler, starts: Starts
) -> None:
    await handler(
        notification(record(INCOMING, "a.mp4"), record(INCOMING, "b.mp4"), record(INCOMING, "c.mp4"))
    )
    assert [o.key for o in starts.objects] == ["a.mp4", "b.mp4", "c.mp4"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (notification(record("someone-elses-bucket", "x.mp4")).value, "other_bucket"),
        (notification(record(INCOMING, "x.mp4", name="s3:ObjectRemoved:Delete")).value, "not_created"),
        (TEST_EVENT, "test_event"),
    ],
    ids=["another-bucket", "a-deletion", "minios-test-event"],
)
async def test_what_is_not_a_new_object_in_the_incoming_bucket_starts_nothing_and_is_counted_by_reason(
    handler: SourceEventHandler, starts: Starts, payload: bytes, reason: str
) -> None:
    before = ignored(reason)
    await handler(raw(payload))  # returns: the consumer commits past it
    assert starts.objects == []
    assert ignored(reason) - before == 1


async def test_only_the_incoming_buckets_uploads_of_a_mixed_notification_start_jobs(
    handler: SourceEventHandler, starts: Starts
) -> None:
    await handler(
        notification(
            record("elsewhere", "a.mp4"),
            record(INCOMING, "b.mp4"),
            record(INCOMING, "c.mp4", name="s3:ObjectRemoved:Delete"),
        )
    )
    assert [(o.bucket, o.key) for o in starts.objects] == [(INCOMING, "b.mp4")]


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2, 3]",
        b'{"EventName": "s3:ObjectCreated:Put", "Records": []}',
        json.dumps({"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {}}}]}).encode(),
    ],
    ids=["not-json", "not-utf8", "not-an-object", "no-records", "record-without-bucket-name"],
)
async def test_a_notification_not_of_minios_shape_is_refused_as_malformed_and_starts_nothing(
    handler: SourceEventHandler, starts: Starts, payload: bytes
) -> None:
    before = ignored("malformed")
    with pytest.raises(MalformedSourceEvent) as refused:  # an InvalidMessage: the consumer dead-letters it
        await handler(raw(payload))
    assert refused.value.code == "E_SOURCE_EVENT_MALFORMED"
    assert starts.objects == []
    assert ignored("malformed") - before == 1


async def test_one_malformed_record_refuses_the_whole_notification_before_any_job_starts(
    handler: SourceEventHandler, starts: Starts
) -> None:
    # Every record is read before any job starts: the dead letter then holds the whole notification,
    # and replaying it after a fix starts each job once.
    broken = {"eventName": "s3:ObjectCreated:Put", "s3": {"object": {"key": "b.mp4"}}}
    with pytest.raises(MalformedSourceEvent, match=r"s3\.bucket\.name"):
        await handler(notification(record(INCOMING, "a.mp4"), broken))
    assert starts.objects == []


async def test_a_job_that_fails_to_start_fails_the_record_so_the_consumer_reads_it_again() -> None:
    async def database_down(created: ObjectCreated) -> None:
        raise ConnectionRefusedError("postgres unreachable")

    handler = SourceEventHandler(incoming_bucket=INCOMING, start_job=database_down)
    with pytest.raises(ConnectionRefusedError):
        await handler(notification(record(INCOMING, "a.mp4")))
