"""Each notifier consumer stores webhooks of its own event type only: a record of another type on its
topic is refused (dead-lettered) before a webhook row is written.

Storing the webhook (idempotent on its id, the job row's parameters for a cancelled or early-failed
job) needs PostgreSQL: tests/integration/test_notifier.py. The body each event type makes is
tests/unit/notifier/test_webhooks.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.kafka import Delivery
from services.notifier.handlers import JobEventHandler
from services.notifier.webhooks import EventType

EXAMPLES = Path(__file__).resolve().parents[3] / "schemas" / "examples"
NEWEST = {EventType.JOB_COMPLETED: "JobCompleted.v4", EventType.JOB_FAILED: "JobFailed.v3",
          EventType.JOB_CANCELLED: "JobCancelled.v1"}  # fmt: skip


def payload(example: str) -> bytes:
    return bytes.fromhex("".join((EXAMPLES / f"{example}.golden.hex").read_text().split()))


@pytest.mark.parametrize(
    ("handles", "arrives"),
    [(handles, arrives) for handles in EventType for arrives in EventType if arrives is not handles],
)
async def test_a_job_event_of_another_type_is_refused_before_any_webhook_is_stored(
    schema_catalog: SchemaCatalog, handles: EventType, arrives: EventType
) -> None:
    presigned: list[str] = []

    def presign(bucket: str, key: str, ttl: timedelta) -> str:
        presigned.append(key)
        return f"https://minio.example/{bucket}/{key}"

    handler = JobEventHandler(
        event_type=handles,
        catalog=schema_catalog,
        sessions=async_sessionmaker(),  # unbound: storing a webhook would raise, never connect
        presign=presign,
        output_url_ttl=timedelta(days=7),
    )
    with pytest.raises(InvalidMessage) as refused:
        await handler(Delivery(handles.value, 0, 0, None, payload(NEWEST[arrives]), {}))
    assert refused.value.code == "E_UNEXPECTED_RECORD"
    assert presigned == [], "no download link is made for an event this consumer does not handle"
