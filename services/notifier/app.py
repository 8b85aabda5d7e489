"""Composition root of the notifier: job.completed / job.failed / job.cancelled in, signed webhooks out."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from infiniteflow_common.kafka import Delivery, publish_dead_letter
from infiniteflow_common.runtime import Runtime
from infiniteflow_common.topics import Topic
from services.notifier.config import NotifierSettings
from services.notifier.delivery import Deliverer
from services.notifier.handlers import JobEventHandler
from services.notifier.webhooks import EventType, Signer

SERVICE = "notifier"


def build(settings: NotifierSettings) -> Runtime:
    """Wire the consumers and the delivery loop onto a `Runtime` (opens nothing until it runs)."""
    runtime = Runtime(settings, SERVICE)

    async def dead_letter(origin: Delivery, *, code: str, reason: str, attempts: int, job_id: str) -> None:
        await publish_dead_letter(
            runtime.broker,
            runtime.catalog,
            origin,
            service=SERVICE,
            code=code,
            reason=reason,
            attempts=attempts,
            job_id=job_id,
        )

    def presign(bucket: str, key: str, ttl: timedelta) -> str:
        return str(runtime.storage.presigned_get_object(bucket, key, expires=ttl))

    deliverer = Deliverer(
        settings=settings,
        sessions=runtime.sessions,
        signer=Signer(settings.webhook_secret.get_secret_value()),
        dead_letter=dead_letter,
    )
    for topic, event_type in (
        (Topic.JOB_COMPLETED, EventType.JOB_COMPLETED),
        (Topic.JOB_FAILED, EventType.JOB_FAILED),
        (Topic.JOB_CANCELLED, EventType.JOB_CANCELLED),
    ):
        runtime.consume(
            topic.value,
            JobEventHandler(
                event_type=event_type,
                catalog=runtime.catalog,
                sessions=runtime.sessions,
                presign=presign,
                output_url_ttl=timedelta(seconds=settings.webhook_output_url_ttl_s),
                on_stored=deliverer.wake,
            ),
        )
    runtime.background(deliverer.run)
    return runtime


def main() -> None:
    """Run the notifier until SIGTERM/SIGINT; exits non-zero when a consumer or the loop gives up."""
    runtime = build(NotifierSettings())
    raise SystemExit(asyncio.run(runtime.run()))
