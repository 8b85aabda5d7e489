"""Bad input on minio.events is logged, counted and dead-lettered or skipped; the consumer keeps going."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from infiniteflow_common.minio_events import ObjectCreated
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.topics import dlq_of
from services.ingest.source_events import SourceEventHandler
from tests.integration.kafka_support import (
    committed_offset,
    private_topic,
    produce,
    read_all,
    running_consumer,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.kafka]


def _event(bucket: str, key: str, name: str = "s3:ObjectCreated:Put") -> bytes:
    record = {
        "eventName": name,
        "eventTime": "2026-11-23T10:00:00.000Z",
        "s3": {
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 3, "eTag": "abc", "userMetadata": {}},
        },
    }
    return json.dumps({"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]}).encode()


def _ignored(reason: str) -> float:
    return REGISTRY.get_sample_value("infiniteflow_source_events_ignored_total", {"reason": reason}) or 0.0


async def test_bad_source_events_are_counted_and_do_not_stop_the_consumer(
    settings: CommonSettings, unique: str
) -> None:
    started: list[ObjectCreated] = []

    async def start_job(record: ObjectCreated) -> None:
        started.append(record)

    handler = SourceEventHandler(incoming_bucket="incoming", start_job=start_job)
    before = {r: _ignored(r) for r in ("malformed", "other_bucket", "test_event", "not_created")}
    messages = [
        b"{not json",
        _event("someone-elses-bucket", "x.mp4"),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "incoming"}).encode(),
        _event("incoming", "gone.mp4", name="s3:ObjectRemoved:Delete"),
        b"[1, 2, 3]",
        _event("incoming", "folder/my+clip%C3%BC.mp4"),
    ]
    with private_topic(settings, f"test.source.{unique}") as topic:
        produce(settings, topic, messages)
        async with running_consumer(settings, topic, handler, group=f"g-{unique}", service="ingest"):
            await eventually(
                lambda: committed_offset(settings, topic, f"g-{unique}") == len(messages), what="commit"
            )
        dead = read_all(settings, dlq_of(topic), 2)
    assert [r.key for r in started] == ["folder/my clipü.mp4"]
    assert len(dead) == 2
    assert {dict(m.headers())["x-error-code"] for m in dead} == {b"E_SOURCE_EVENT_MALFORMED"}
    assert _ignored("malformed") - before["malformed"] == 2
    assert _ignored("other_bucket") - before["other_bucket"] == 1
    assert _ignored("test_event") - before["test_event"] == 1
    assert _ignored("not_created") - before["not_created"] == 1
