"""MinIO publishes object-created events of the incoming bucket to `minio.events`, keys decoded exactly."""

from __future__ import annotations

import io
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from infiniteflow_common.minio_events import ObjectCreated, parse_notification
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client

pytestmark = [pytest.mark.kafka, pytest.mark.minio]


def _tail_consumer(settings: CommonSettings) -> Consumer:
    """A consumer positioned at the current end of every partition of minio.events."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": "tail", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics("minio.events", timeout=10).topics["minio.events"].partitions
    ends = [
        TopicPartition(
            "minio.events", p, consumer.get_watermark_offsets(TopicPartition("minio.events", p))[1]
        )
        for p in partitions
    ]
    consumer.assign(ends)
    return consumer


def _upload_and_wait(
    settings: CommonSettings, key: str, metadata: dict[str, str]
) -> tuple[ObjectCreated, float]:
    consumer = _tail_consumer(settings)
    try:
        make_client(settings).put_object(
            settings.incoming_bucket, key, io.BytesIO(b"not a video"), 11, metadata=metadata
        )
        started = time.monotonic()
        while time.monotonic() - started < 15:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            for record in parse_notification(message.value()):
                if isinstance(record, ObjectCreated) and record.key == key:
                    return record, time.monotonic() - started
        raise AssertionError(f"no event for {key!r} on minio.events within 15 s")
    finally:
        consumer.close()


def test_an_upload_produces_an_event_with_the_objects_user_metadata(
    settings: CommonSettings, unique: str
) -> None:
    key = f"tests/{unique}/clip.mp4"
    record, latency = _upload_and_wait(
        settings, key, {"multiplier": "4", "webhook-url": "http://127.0.0.1:1/hook?a=b&c=d"}
    )
    assert record.bucket == settings.incoming_bucket
    assert record.size == 11
    assert record.etag
    assert record.user_metadata["multiplier"] == "4"
    assert record.user_metadata["webhook-url"] == "http://127.0.0.1:1/hook?a=b&c=d"
    assert latency < 10


@pytest.mark.parametrize(
    "name",
    [
        "with spaces and + plus.mp4",
        "ünïcödé 視頻 €.mp4",
        "percent %20 %2B %% literal.mp4",
        "$(echo x) -leading 'q'.mp4",
    ],
)
def test_object_keys_decode_to_the_exact_key(settings: CommonSettings, unique: str, name: str) -> None:
    key = f"tests/{unique}/{name}"
    record, _ = _upload_and_wait(settings, key, {})
    assert record.key == key
