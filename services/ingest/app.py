"""Composition root of the ingest service: `minio.events` consumer, HTTP API and sweeper in one process."""

from __future__ import annotations

import asyncio

import uvicorn

from infiniteflow_common.runtime import Runtime
from infiniteflow_common.topics import Topic
from services.ingest.api import ApiDeps, create_api, kafka_admin_check
from services.ingest.config import IngestSettings
from services.ingest.source_events import SourceEventHandler
from services.ingest.start import JobStarter
from services.ingest.sweeper import Sweeper


def build(settings: IngestSettings) -> Runtime:
    """The runtime with its consumer and background tasks registered (nothing is opened yet)."""
    runtime = Runtime(settings, "ingest")
    starter = JobStarter(
        sessions=runtime.sessions, storage=runtime.storage, publish=runtime.publish, settings=settings
    )
    runtime.consume(
        Topic.MINIO_EVENTS.value,
        SourceEventHandler(incoming_bucket=settings.incoming_bucket, start_job=starter),
    )
    api = create_api(
        ApiDeps(
            settings=settings,
            sessions=runtime.sessions,
            storage=runtime.storage,
            starter=starter,
            kafka_check=kafka_admin_check(settings.kafka_bootstrap),
        )
    )
    server = uvicorn.Server(
        uvicorn.Config(api, host=settings.api_host, port=settings.api_port, log_config=None)
    )
    # uvicorn captures SIGTERM/SIGINT while serving and re-raises them when it stops, so the Runtime's
    # own handlers still see the signal; the server finishing also ends `Runtime.run`.
    sweeper = Sweeper(sessions=runtime.sessions, storage=runtime.storage, starter=starter, settings=settings)
    runtime.background(server.serve)
    runtime.background(sweeper.run_forever)
    return runtime


def main() -> None:
    """Run ingest until SIGTERM/SIGINT (`infiniteflow run ingest`)."""
    raise SystemExit(asyncio.run(build(IngestSettings()).run()))
